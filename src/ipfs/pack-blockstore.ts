import { createHash, hash } from 'node:crypto'
import { mkdir, open, readdir, stat, statfs, unlink, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { BaseBlockstore } from 'blockstore-core'
import type { Pair } from 'interface-blockstore'
import { open as openLmdb, type Database, type RootDatabase } from 'lmdb'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import * as Digest from 'multiformats/hashes/digest'
import type { Logger } from '../logging.js'
import { NoSpaceError, toSpaceError } from './errors.js'
import { RangeSet } from './range-set.js'
import { NotFoundError, type RepoBlockstore } from './stores.js'
import { WriteBehindQueue } from './write-behind.js'

/** Pack blockstore defaults, in one place. */
export const DEFAULTS = {
  /** Bytes queued for writing at most: a `put` past it waits (the writer runs this far ahead of the disk). */
  maxPendingBytes: 32 << 20,
  /**
   * Free bytes kept on the filesystem: a write that would leave less fails with NoSpaceError
   * before it starts, so the index's own commits always find room (an LMDB commit that runs out
   * of space is noisy and fails every write queued with it).
   */
  reserveBytes: 1 << 20,
  /** Free space is asked of the filesystem again after this long, or once the last answer is nearly used up. */
  statfsIntervalMs: 1000,
  /** Adjacent blocks written with one `pwrite`, up to this many bytes. */
  writeBatchBytes: 1 << 20,
  /**
   * `readMany` reads blocks that lie close together in one pack with one `pread` of up to this
   * many bytes (a layer's leaves are written in file order, so a range of it is one run)…
   */
  readBatchBytes: 1 << 20,
  /**
   * …skipping at most this many bytes between two of them (an interior node written between its
   * leaves), and never more skipped bytes in a run than wanted ones: blocks of other files
   * written in between (fetches of two layers at once) cost at most twice their bytes in reads.
   */
  readGapBytes: 64 << 10,
  /** A pack is closed and a new one started past this size. */
  maxPackBytes: 1 << 30,
  /** A closed pack whose live blocks take less than this fraction of it is compacted after a delete. */
  compactBelow: 0.5,
  /**
   * false: a block is hashed against its multihash the first time this process reads it from
   * its pack, and bytes of a pack that verified are not hashed again (packs are written once,
   * readable by the repo's owner only; a torn tail after a crash is caught by the first read of
   * the next process). true: every read is hashed (as kubo's `HashOnRead`), which also catches
   * a disk that changes bytes under a running daemon, at the cost of a SHA-256 pass per read.
   */
  verifyEveryRead: false,
  /**
   * Verified ranges kept (adjacent blocks merge into one: a layer read whole is one range);
   * past it they are forgotten, and reads hash again until they are learnt anew.
   */
  maxVerifiedRanges: 1 << 18,
  /** Index entries read between two yields to the event loop (the index walks are synchronous). */
  scanBatch: 512,
  /** The index file and the packs' folder, inside the store's folder. */
  indexFile: 'index.mdb',
  packsDir: 'packs'
} as const

export interface PackBlockstoreOptions {
  maxPendingBytes?: number
  maxPackBytes?: number
  compactBelow?: number
  verifyEveryRead?: boolean
  maxVerifiedRanges?: number
  /** A blockstore-fs folder of earlier versions: read and deleted from after the packs, never written. */
  legacy?: RepoBlockstore
}

type Bytes = Parameters<BaseBlockstore['put']>[1]

/** Where a block lives: pack number, offset, length (16 bytes in the index). */
interface Entry { pack: number, offset: number, length: number }

/** Bytes of a pack: one block's, or several blocks' that lie back to back. */
export type PackSpan = Entry

const encodeEntry = (e: Entry): Buffer => {
  const b = Buffer.allocUnsafe(16)
  b.writeUInt32LE(e.pack, 0)
  b.writeUInt32LE(e.length, 4)
  b.writeDoubleLE(e.offset, 8)
  return b
}
const decodeEntry = (b: Buffer): Entry => ({ pack: b.readUInt32LE(0), length: b.readUInt32LE(4), offset: b.readDoubleLE(8) })

const keyOf = (cid: CID): Buffer => Buffer.from(cid.multihash.bytes.buffer, cid.multihash.bytes.byteOffset, cid.multihash.bytes.byteLength)
const pendingKey = (cid: CID): string => keyOf(cid).toString('base64')
const packName = (n: number): string => `${String(n).padStart(8, '0')}.pack`
const SHA2_256 = 0x12

async function bytesOf (val: Bytes): Promise<Uint8Array> {
  if (val instanceof Uint8Array) return val
  const parts: Uint8Array[] = []
  for await (const p of val) parts.push(p)
  return Buffer.concat(parts)
}

/** True when `bytes` hash to the multihash `key` (sha2-256; blocks of other hashes are not re-checked). */
function verifies (key: Buffer, bytes: Uint8Array): boolean {
  // the common case without decoding the multihash: code 0x12, length 32, then the digest
  if (key.length === 34 && key[0] === SHA2_256 && key[1] === 32) return hash('sha256', bytes, 'buffer').equals(key.subarray(2))
  const mh = Digest.decode(key)
  if (mh.code !== SHA2_256) return true
  return createHash('sha256').update(bytes).digest().equals(mh.digest)
}

/**
 * The repo's blockstore, filestore-style: blocks are appended to pack files (`packs/NNNNNNNN.pack`,
 * written once, in the order they come: a layer's leaves are its eStargz blob, byte for byte) and
 * an LMDB index maps each block's multihash to (pack, offset, length).
 *
 * - **Writes batch.** A `put` takes an offset in the open pack at once, writes there, then adds
 *   the index entry; lmdb-js commits all entries of an event-loop turn in one transaction on its
 *   own thread. `put` returns once the block is queued (readable from memory until indexed), and
 *   waits only when `maxPendingBytes` are queued. `flush()` is the barrier: every block queued so
 *   far is indexed and the pack synced to disk; it throws the first write error since the last
 *   flush (a full disk: NoSpaceError). An image is listed only after a flush.
 * - **Crash safety.** An entry is written only after its bytes, and an LMDB commit is whole or
 *   absent: after `kill -9` a block is absent (its bytes, if any, are dead space in a pack) or
 *   indexed over its bytes. A block is verified against its multihash when this process first
 *   reads it (every read with `verifyEveryRead`), so even a pack that lost its tail in a power
 *   cut serves no wrong block: the entry is dropped, the block is absent.
 *   A store opened after a crash starts a new pack, never appending after a torn tail.
 * - **Small memory.** Blocks are read with `pread` (no mapping of the data); only the index
 *   (16 bytes of value per block) is memory-mapped.
 * - **Deletes free space.** A delete drops the entry; a closed pack whose live blocks fall below
 *   `compactBelow` of it is compacted: its live blocks are copied to the open pack, then it is
 *   removed.
 * - `putFetched`/`pendingWrites`/`flush` as `RepoBlockstore` (the fetch path writes behind).
 */
export class PackBlockstore extends BaseBlockstore {
  private env?: RootDatabase
  private index?: Database<Buffer, Buffer>
  private readonly packs = new Map<number, { fh: FileHandle, size: number, live: number }>()
  /** The pack written to; its file is created at the first write (opening a repo to read creates none). */
  private active = 0
  private rolling?: Promise<void>
  /** Blocks with an offset, not yet written (`writeBatch`). */
  private batch: Array<{ k: Buffer, pk: string, cid: CID, bytes: Uint8Array, entry: Entry, fetched: boolean, from?: number, done: () => void }> = []
  /** Keys being deleted: a compaction's copy of one must not put its entry back. */
  private readonly deleting = new Set<string>()
  private batchBytes = 0
  private batchTimer?: NodeJS.Immediate
  /** Free bytes at the last statfs, less what was written since, and when it was asked. */
  private free = { bytes: 0, at: 0 }
  private writing = 0
  private spaceCheck: Promise<void> = Promise.resolve()
  private readonly queue: WriteBehindQueue
  /** Byte ranges of each pack this process has read and found to match their multihashes. */
  private readonly verified = new Map<number, RangeSet>()
  private verifiedRanges = 0
  private compacting: Promise<void> = Promise.resolve()
  private readonly opts: Required<Omit<PackBlockstoreOptions, 'legacy'>>
  readonly legacy?: RepoBlockstore

  /** `path`: the store's folder. */
  constructor (readonly path: string, options: PackBlockstoreOptions = {}, private readonly log?: Logger) {
    super()
    this.opts = {
      maxPendingBytes: options.maxPendingBytes ?? DEFAULTS.maxPendingBytes,
      maxPackBytes: options.maxPackBytes ?? DEFAULTS.maxPackBytes,
      compactBelow: options.compactBelow ?? DEFAULTS.compactBelow,
      verifyEveryRead: options.verifyEveryRead ?? DEFAULTS.verifyEveryRead,
      maxVerifiedRanges: options.maxVerifiedRanges ?? DEFAULTS.maxVerifiedRanges
    }
    this.queue = new WriteBehindQueue(this.opts.maxPendingBytes)
    this.legacy = options.legacy
  }

  async open (): Promise<void> {
    const packsDir = join(this.path, DEFAULTS.packsDir)
    try {
      await mkdir(packsDir, { recursive: true })
      // encoding 'binary': entries are stored as given; no cache of decoded values.
      this.env = openLmdb({ path: join(this.path, DEFAULTS.indexFile), noSubdir: true, encoding: 'binary', keyEncoding: 'binary', cache: false, overlappingSync: false })
      this.index = this.env as unknown as Database<Buffer, Buffer>
      let last = 0
      for (const name of await readdir(packsDir)) {
        const m = /^(\d{8})\.pack$/.exec(name)
        if (m == null) continue
        const n = Number(m[1])
        const file = join(packsDir, name)
        last = Math.max(last, n)
        const { size } = await stat(file)
        if (size === 0) await unlink(file) // opened for writing, never written
        else this.packs.set(n, { fh: await open(file, 'r'), size, live: 0 })
      }
      // Live bytes per pack, from the index (bytes a crash left unindexed are dead space).
      let i = 0
      for (const { value } of this.index.getRange({ snapshot: false }) as Iterable<{ value: Buffer }>) {
        const e = decodeEntry(value)
        const p = this.packs.get(e.pack)
        if (p != null) p.live += e.length
        if (++i % DEFAULTS.scanBatch === 0) await new Promise(resolve => setImmediate(resolve))
      }
      this.active = last + 1
    } catch (err) {
      throw toSpaceError(err, this.path)
    }
    await this.legacy?.open()
    // Packs left mostly dead (deletes before a restart, a crash's dead space) are compacted now.
    for (const n of [...this.packs.keys()]) this.maybeCompact(n)
  }

  private get db (): Database<Buffer, Buffer> {
    if (this.index == null) throw new Error('blockstore is not open')
    return this.index
  }

  private async startPack (n: number): Promise<void> {
    const fh = await open(join(this.path, DEFAULTS.packsDir, packName(n)), 'wx+')
    this.packs.set(n, { fh, size: 0, live: 0 })
    this.active = n
  }

  override async put (key: CID, val: Bytes, options?: { signal?: AbortSignal }): Promise<CID> {
    options?.signal?.throwIfAborted()
    this.queue.throwFailure()
    if (this.queue.has(pendingKey(key))) return key
    const bytes = await bytesOf(val)
    await this.queue.room()
    if (this.db.doesExist(keyOf(key))) return key
    await this.enqueue(key, bytes)
    return key
  }

  /**
   * Stores a verified block fetched from the network without waiting for the disk. The caller
   * must have checked `bytes` against `cid`. False when the block was being written already.
   */
  putFetched (cid: CID, bytes: Uint8Array): boolean {
    if (this.queue.has(pendingKey(cid))) return false
    void this.enqueue(cid, bytes, true)
    return true
  }

  /** Queues the write; resolves once it is queued (a new pack may have to be opened first). */
  private async enqueue (cid: CID, bytes: Uint8Array, fetched = false, from?: number): Promise<void> {
    const k = keyOf(cid)
    const pk = pendingKey(cid)
    let done: () => void = () => {}
    const write = new Promise<void>(resolve => { done = resolve })
    this.queue.add(pk, bytes, write)
    try {
      let p = this.packs.get(this.active)
      while (p == null || p.size + bytes.byteLength > this.opts.maxPackBytes) {
        if (this.rolling == null) {
          const next = p == null ? this.active : this.active + 1
          this.rolling = this.startPack(next).finally(() => { this.rolling = undefined })
        }
        await this.rolling
        p = this.packs.get(this.active)
        if (p != null && p.size + bytes.byteLength > this.opts.maxPackBytes && p.size === 0) break // one block over the cap gets a pack of its own
      }
      const entry: Entry = { pack: this.active, offset: p.size, length: bytes.byteLength }
      p.size += bytes.byteLength // the offset is ours from here: later puts write after it
      if (this.batch.length > 0 && this.batch[0].entry.pack !== entry.pack) this.writeBatch()
      this.batch.push({ k, pk, cid, bytes, entry, fetched, from, done })
      this.batchBytes += bytes.byteLength
      if (this.batchBytes >= DEFAULTS.writeBatchBytes) this.writeBatch()
      else this.batchTimer ??= setImmediate(() => { this.writeBatch() })
    } catch (err) {
      this.settle(pk, bytes.byteLength, done)
      throw toSpaceError(err, this.path)
    }
  }

  /**
   * Writes the queued blocks (adjacent in one pack) with one `pwritev`, then indexes them: small
   * blocks (a tar header, a small file) cost a share of one write instead of a write each.
   */
  private writeBatch (): void {
    if (this.batchTimer != null) clearImmediate(this.batchTimer)
    this.batchTimer = undefined
    const items = this.batch.splice(0)
    this.batchBytes = 0
    if (items.length === 0) return
    const first = items[0].entry
    const p = this.packs.get(first.pack) as NonNullable<ReturnType<typeof this.packs.get>>
    // One gathered write from the blocks themselves: concatenating them first cost a copy of
    // every fetched byte into a fresh buffer (and its page faults).
    const bufs = items.map(i => i.bytes)
    const total = bufs.reduce((n, b) => n + b.byteLength, 0)
    ;(async () => {
      await this.checkSpace(total, first.pack)
      let bytesWritten: number
      try {
        ({ bytesWritten } = await p.fh.writev(bufs, first.offset))
      } finally {
        this.writing -= total
      }
      if (bytesWritten !== total) throw new NoSpaceError(this.path, 'ENOSPC')
      // Entries only once their bytes are written; lmdb-js commits these in one transaction.
      await Promise.all(items.map(async i => {
        if (i.from != null) {
          // a compaction's copy: only while the entry still points into the pack being compacted
          const cur = this.db.getBinary(i.k)
          if (cur == null || decodeEntry(cur).pack !== i.from || this.deleting.has(i.pk)) return
        }
        await this.db.put(i.k, encodeEntry(i.entry))
        p.live += i.entry.length
      }))
    })().catch((err: unknown) => {
      const e = toSpaceError(err, join(this.path, DEFAULTS.packsDir, packName(first.pack)))
      // A fetched block is fetched again on the next read; a pushed one fails the push's flush.
      if (items.every(i => i.fetched)) this.log?.warn({ blocks: items.length, err: (e as Error).message }, 'cannot store fetched blocks')
      else this.queue.fail(e)
    }).finally(() => {
      for (const i of items) this.settle(i.pk, i.bytes.byteLength, i.done)
    })
  }

  /**
   * Throws NoSpaceError when writing `n` bytes would leave less than `reserveBytes` free. Checks
   * run one at a time and count the bytes of writes still under way (statfs does not see them).
   */
  private async checkSpace (n: number, pack: number): Promise<void> {
    const check = this.spaceCheck.then(async () => {
      const need = n + DEFAULTS.reserveBytes
      if (Date.now() - this.free.at > DEFAULTS.statfsIntervalMs || this.free.bytes < need * 2) {
        const st = await statfs(this.path)
        this.free = { bytes: st.bavail * st.bsize - this.writing, at: Date.now() }
      }
      if (this.free.bytes < need) throw new NoSpaceError(join(this.path, DEFAULTS.packsDir, packName(pack)), 'ENOSPC')
      this.free.bytes -= n
      this.writing += n
    })
    this.spaceCheck = check.catch(() => {})
    await check
  }

  private settle (pk: string, n: number, done: () => void): void {
    this.queue.settle(pk, n)
    done()
  }

  /** Blocks queued but not yet indexed. */
  get pendingWrites (): number {
    return this.queue.size
  }

  /** Resolves when every block queued so far is indexed and on disk; throws the first write error since the last flush. */
  async flush (): Promise<void> {
    await this.queue.drain()
    await this.legacy?.flush()
    this.queue.throwFailure()
    try {
      await this.packs.get(this.active)?.fh.datasync()
      await this.db.flushed
    } catch (err) {
      throw toSpaceError(err, this.path)
    }
  }

  override async has (key: CID, options?: { signal?: AbortSignal }): Promise<boolean> {
    options?.signal?.throwIfAborted()
    if (this.queue.has(pendingKey(key))) return true
    if (this.db.doesExist(keyOf(key))) return true
    return this.legacy != null && await this.legacy.has(key)
  }

  override async * get (key: CID, options?: { signal?: AbortSignal }): AsyncGenerator<Uint8Array> {
    yield * this.getBlock(key, options)
  }

  private async * getBlock (key: CID, options?: { signal?: AbortSignal }): AsyncGenerator<Uint8Array> {
    const held = this.queue.get(pendingKey(key))
    if (held != null) {
      yield held.bytes
      return
    }
    options?.signal?.throwIfAborted()
    const bytes = await this.read(keyOf(key))
    if (bytes != null) {
      yield bytes
      return
    }
    if (this.legacy == null) throw new NotFoundError(`block ${key.toString()} not found`)
    yield * this.legacy.get(key, options)
  }

  /** A block's bytes from its pack, verified; undefined when absent or when they do not verify (the entry is dropped). */
  private async read (k: Buffer): Promise<Uint8Array | undefined> {
    const v = this.db.getBinary(k)
    if (v == null) return undefined
    const e = decodeEntry(v)
    const buf = Buffer.allocUnsafe(e.length)
    const got = await this.pread(e.pack, buf, e.offset)
    if (got === e.length && this.checks(k, e, buf)) return buf
    await this.drop(k, v)
    return undefined
  }

  /** Whether `bytes`, read from where `e` says, are the block `k`: hashed unless those bytes verified before. */
  private checks (k: Buffer, e: Entry, bytes: Uint8Array): boolean {
    if (this.opts.verifyEveryRead) return verifies(k, bytes)
    let set = this.verified.get(e.pack)
    if (set?.covers(e.offset, e.offset + e.length) === true) return true
    if (!verifies(k, bytes)) return false
    if (set == null) {
      set = new RangeSet()
      this.verified.set(e.pack, set)
    }
    const before = set.size
    set.add(e.offset, e.offset + e.length)
    this.verifiedRanges += set.size - before
    if (this.verifiedRanges > this.opts.maxVerifiedRanges) {
      this.verified.clear()
      this.verifiedRanges = 0
    }
    return true
  }

  /** Forgets what was verified in pack `n` (it is being removed). */
  private forgetVerified (n: number): void {
    this.verifiedRanges -= this.verified.get(n)?.size ?? 0
    this.verified.delete(n)
  }

  /**
   * Where blocks lie in the packs, for those whose bytes this process has read there and found
   * to match their CIDs (undefined for the others, and for all with `verifyEveryRead`). With
   * `readVerified`, a caller serving many blocks whole (a mirror sending a layer) reads them
   * back as runs of a file, without a lookup and a hash per block.
   */
  verifiedSpans (cids: CID[]): Array<PackSpan | undefined> {
    const out = new Array<PackSpan | undefined>(cids.length)
    if (this.opts.verifyEveryRead) return out
    for (let i = 0; i < cids.length; i++) {
      const v = this.db.getBinary(keyOf(cids[i]))
      if (v == null) continue
      const e = decodeEntry(v)
      if (this.verified.get(e.pack)?.covers(e.offset, e.offset + e.length) === true) out[i] = e
    }
    return out
  }

  /**
   * Bytes of a span verified before (`verifiedSpans`; adjacent ones may be joined) into `buf`,
   * which it fills from `span.offset`; `buf` must not be longer than the span. The bytes read:
   * 0 when the span is not verified (any more: its pack was compacted away, or the record was
   * forgotten), so the caller reads those blocks the ordinary way.
   */
  async readVerified (span: PackSpan, buf: Buffer): Promise<number> {
    if (buf.length > span.length || this.verified.get(span.pack)?.covers(span.offset, span.offset + buf.length) !== true) return 0
    try {
      const got = await this.pread(span.pack, buf, span.offset)
      return got === buf.length ? got : 0
    } catch {
      return 0 // the pack was closed under the read (compacted)
    }
  }

  /** Reads into `buf` from `offset` of pack `n` until it is full or the pack ends; the bytes read. */
  private async pread (n: number, buf: Buffer, offset: number): Promise<number> {
    const p = this.packs.get(n)
    let got = 0
    if (p == null) return 0
    while (got < buf.length) {
      const { bytesRead } = await p.fh.read(buf, got, buf.length - got, offset + got)
      if (bytesRead === 0) break
      got += bytesRead
    }
    return got
  }

  /** Drops the entry `v` of a block that does not verify (unless it changed meanwhile). */
  private async drop (k: Buffer, v: Buffer): Promise<void> {
    const e = decodeEntry(v)
    this.log?.warn({ multihash: k.toString('hex'), pack: e.pack, offset: e.offset }, 'a stored block does not verify: dropped')
    if (this.db.getBinary(k)?.equals(v) === true) {
      await this.db.remove(k)
      const p = this.packs.get(e.pack)
      if (p != null) p.live -= e.length
    }
  }

  /**
   * Many blocks at once, each checked against its CID (as `get`: hashed unless its bytes
   * verified before in this process): entries that lie close together in one
   * pack (a layer's leaves, written in file order) are read with one `pread` of up to
   * `readBatchBytes`, instead of a read on the threadpool per block. Undefined at the index of a
   * block that is absent here, held in the legacy folder, of a hash other than sha2-256 (the
   * caller reads and checks those one by one), or that does not verify (its entry is dropped,
   * as `get` does). Blocks still queued for writing are served from memory, checked too.
   * `maxBytes`: blocks past that many bytes (by their stored length; the first always counts)
   * are left undefined too, so a caller whose idea of the sizes is wrong (a DAG that lies about
   * its leaves) does not get more in memory than it asked for.
   */
  async readMany (cids: CID[], options?: { signal?: AbortSignal, maxBytes?: number }): Promise<Array<Uint8Array | undefined>> {
    options?.signal?.throwIfAborted()
    const out = new Array<Uint8Array | undefined>(cids.length)
    const found: Array<{ i: number, k: Buffer, v: Buffer, e: Entry }> = []
    const queued = this.queue.size > 0
    const maxBytes = options?.maxBytes ?? Infinity
    let bytes = 0
    for (let i = 0; i < cids.length && (i === 0 || bytes <= maxBytes); i++) {
      const k = keyOf(cids[i])
      if (k[0] !== SHA2_256) continue
      const held = queued ? this.queue.get(pendingKey(cids[i])) : undefined
      if (held != null) {
        bytes += held.bytes.length
        if ((i === 0 || bytes <= maxBytes) && verifies(k, held.bytes)) out[i] = held.bytes
        continue
      }
      const v = this.db.getBinary(k)
      if (v == null) continue
      const e = decodeEntry(v)
      bytes += e.length
      if (i === 0 || bytes <= maxBytes) found.push({ i, k, v, e })
    }
    found.sort((a, b) => a.e.pack - b.e.pack || a.e.offset - b.e.offset)
    // Runs: one pack, each entry within `readGapBytes` of the run's end, at most `readBatchBytes`
    // (a larger block is a run of its own), at most as many skipped bytes as wanted ones.
    const runs: Array<{ pack: number, start: number, end: number, wanted: number, items: typeof found }> = []
    for (const f of found) {
      const r = runs.at(-1)
      const end = f.e.offset + f.e.length
      if (r != null && r.pack === f.e.pack && f.e.offset <= r.end + DEFAULTS.readGapBytes) {
        const span = Math.max(r.end, end) - r.start
        const wanted = r.wanted + f.e.length
        if (span <= DEFAULTS.readBatchBytes && span - wanted <= wanted) {
          r.end = Math.max(r.end, end)
          r.wanted = wanted
          r.items.push(f)
          continue
        }
      }
      runs.push({ pack: f.e.pack, start: f.e.offset, end, wanted: f.e.length, items: [f] })
    }
    await Promise.all(runs.map(async r => {
      const buf = Buffer.allocUnsafe(r.end - r.start)
      const got = await this.pread(r.pack, buf, r.start)
      for (const { i, k, v, e } of r.items) {
        const at = e.offset - r.start
        const bytes = buf.subarray(at, at + e.length)
        if (at + e.length <= got && this.checks(k, e, bytes)) out[i] = bytes
        else await this.drop(k, v)
      }
    }))
    return out
  }

  override async delete (key: CID, options?: { signal?: AbortSignal }): Promise<void> {
    options?.signal?.throwIfAborted()
    // A write still under way would put the block back after the delete.
    await this.queue.get(pendingKey(key))?.write
    const k = keyOf(key)
    const v = this.db.getBinary(k)
    if (v != null) {
      const e = decodeEntry(v)
      const pk = pendingKey(key)
      this.deleting.add(pk)
      try {
        await this.db.remove(k)
      } catch (err) {
        throw toSpaceError(err, this.path)
      } finally {
        this.deleting.delete(pk)
      }
      const p = this.packs.get(e.pack)
      if (p != null) p.live -= e.length
      this.maybeCompact(e.pack)
    }
    if (this.legacy != null && await this.legacy.has(key)) await this.legacy.delete(key)
  }

  /** Compacts pack `n` (after the compactions already queued) when it is closed and mostly dead. */
  private maybeCompact (n: number): void {
    const p = this.packs.get(n)
    if (p == null || n === this.active || p.live >= p.size * this.opts.compactBelow) return
    this.compacting = this.compacting.then(async () => { await this.compact(n) }).catch((err: Error) => {
      this.log?.warn({ pack: n, err: err.message }, 'compacting a pack failed (it stays as it is)')
    })
  }

  /** Copies pack `n`'s live blocks to the open pack, then removes it. Crash-safe: each entry moves in one commit, the file goes last. */
  private async compact (n: number): Promise<void> {
    const p = this.packs.get(n)
    if (p == null || n === this.active) return
    const moving: Buffer[] = []
    let i = 0
    for (const { key, value } of this.db.getRange({ snapshot: false }) as Iterable<{ key: Buffer, value: Buffer }>) {
      if (decodeEntry(value).pack === n) moving.push(Buffer.from(key))
      if (++i % DEFAULTS.scanBatch === 0) await new Promise(resolve => setImmediate(resolve))
    }
    for (const k of moving) {
      const bytes = await this.read(k)
      if (bytes == null) continue
      const cid = CID.createV1(raw.code, Digest.decode(k))
      if (!this.queue.has(pendingKey(cid)) && !this.deleting.has(pendingKey(cid))) await this.enqueue(cid, bytes, false, n)
    }
    await this.flush()
    // Entries that still point here (a put raced the scan) keep the pack.
    for (const { value } of this.db.getRange({ snapshot: false }) as Iterable<{ value: Buffer }>) if (decodeEntry(value).pack === n) return
    this.packs.delete(n)
    this.forgetVerified(n)
    await p.fh.close()
    await unlink(join(this.path, DEFAULTS.packsDir, packName(n)))
    this.log?.info({ pack: n, moved: moving.length }, 'pack compacted')
  }

  /** Resolves when the compactions queued so far are done. */
  async compacted (): Promise<void> {
    await this.compacting
  }

  /**
   * Every block: CIDs are v1 raw (the index keeps multihashes, as blockstore-fs), bytes read
   * only when the pair's `bytes` is iterated. Blocks of the legacy folder follow, unless also here.
   */
  override async * getAll (options?: { signal?: AbortSignal }): AsyncGenerator<Pair> {
    await this.flush().catch(() => {}) // queued blocks first; a write error is the writer's to see
    const db = this.db
    let n = 0
    for (const k of db.getKeys({ snapshot: false }) as Iterable<Buffer>) {
      if (++n % DEFAULTS.scanBatch === 0) {
        await new Promise(resolve => setImmediate(resolve))
        options?.signal?.throwIfAborted()
      }
      const cid = CID.createV1(raw.code, Digest.decode(Buffer.from(k)))
      const store = this
      // read only when iterated (a GC walking CIDs must not read every block)
      yield { cid, bytes: (async function * () { yield * store.getBlock(cid, options) })() }
    }
    if (this.legacy == null) return
    for await (const pair of this.legacy.getAll(options)) {
      if (!db.doesExist(keyOf(pair.cid))) yield pair
    }
  }

  /**
   * Bytes of live blocks (what the index points at), bytes the pack files take on disk (live plus
   * space dead until compaction), and blocks. Blocks of the legacy folder are not counted.
   */
  usage (): { bytes: number, diskBytes: number, blocks: number } {
    let bytes = 0
    let diskBytes = 0
    for (const p of this.packs.values()) { bytes += p.live; diskBytes += p.size }
    return { bytes, diskBytes, blocks: (this.db.getStats() as { entryCount: number }).entryCount }
  }

  async close (): Promise<void> {
    await this.flush().catch(() => {})
    await this.compacting
    await this.legacy?.close()
    for (const p of this.packs.values()) await p.fh.close().catch(() => {})
    this.packs.clear()
    const env = this.env
    this.env = undefined
    this.index = undefined
    await env?.close()
  }
}
