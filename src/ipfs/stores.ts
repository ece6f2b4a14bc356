import { open, rm } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { FsBlockstore } from 'blockstore-fs'
import { NextToLast } from 'blockstore-fs/sharding'
import { FsDatastore } from 'datastore-fs'
import type { Key } from 'interface-datastore'
import type { CID } from 'multiformats/cid'
import type { Logger } from '../logging.js'
import { NoSpaceError, spaceErrno } from './errors.js'

/**
 * blockstore-fs and datastore-fs write a value to `.<name>.tmp` next to its file, then rename it.
 * A failed write (a full disk) leaves that temp file behind, and the store says only
 * "PutFailedError: Error: ENOSPC ...". These stores remove the temp file and turn a space error
 * into a NoSpaceError that names the file.
 */
async function failedPut (err: unknown, file: string): Promise<never> {
  await rm(join(dirname(file), `.${basename(file)}.tmp`), { force: true })
  const errno = spaceErrno(err)
  throw errno != null ? new NoSpaceError(file, errno) : err
}

/**
 * A missing block, named as interface-store's error: Helia, bitswap and unixfs test
 * `err.name === 'NotFoundError'`. It stands in for that library's class (not one of ours, so not
 * on our base, and with that class's code), which is no direct dependency of ours to import.
 */
export class NotFoundError extends Error {
  override readonly name = 'NotFoundError'
  readonly code = 'ERR_NOT_FOUND'
}

/** A map key for a block: FsBlockstore keys files by multihash, so do we. */
function keyOf (cid: CID): string {
  const mh = cid.multihash.bytes
  return Buffer.from(mh.buffer, mh.byteOffset, mh.byteLength).toString('base64')
}

/**
 * The repo's blockstore: blockstore-fs with
 *
 * - **one read per block**: blockstore-fs streams a file in 64 KiB pieces (16 thread-pool round
 *   trips for a 1 MiB leaf, ~2.5 ms on loopback reads); `get` here reads the file whole;
 * - **write-behind for fetched blocks**: `putFetched` takes a block that came over the network
 *   (already checked against its CID) and writes it in the background; until the write is done
 *   `has`/`get` answer from memory and a `put` of the same block returns at once, so Helia's own
 *   `put` after a fetch costs nothing on the read path. `flush()` (and `close()`) wait for the
 *   writes; a failed write is logged and forgotten (the next read fetches the block again);
 * - clean temp files and a NoSpaceError on a full disk (`failedPut`).
 */
export class RepoBlockstore extends FsBlockstore {
  private readonly sharding: NextToLast
  private readonly pending = new Map<string, { bytes: Uint8Array, write: Promise<void> }>()
  private readonly queue: Array<{ cid: CID, bytes: Uint8Array, k: string, done: () => void }> = []
  private writers = 0

  constructor (location: string, private readonly log?: Logger) {
    const sharding = new NextToLast()
    super(location, { shardingStrategy: sharding })
    this.sharding = sharding
  }

  override async put (key: CID, val: Parameters<FsBlockstore['put']>[1], options?: Parameters<FsBlockstore['put']>[2]): Promise<CID> {
    if (this.pending.has(keyOf(key))) return key
    return await this.write(key, val, options)
  }

  /**
   * Stores a verified block fetched from the network without waiting for the disk. The caller
   * must have checked `bytes` against `cid`. False when the block was being written already
   * (two reads fetched it at the same time).
   */
  putFetched (cid: CID, bytes: Uint8Array): boolean {
    const k = keyOf(cid)
    if (this.pending.has(k)) return false
    let done: () => void = () => {}
    const write = new Promise<void>(resolve => { done = resolve })
    this.pending.set(k, { bytes, write })
    this.queue.push({ cid, bytes, k, done })
    this.pump()
    return true
  }

  /**
   * Writes queued blocks, `WRITE_BEHIND_CONCURRENCY` at a time: each write is several
   * thread-pool operations (open, write, close, rename), and libuv's pool (4 threads) is what
   * the next reads' lookups wait on; a burst of writes all at once delayed them by milliseconds.
   */
  private pump (): void {
    while (this.writers < WRITE_BEHIND_CONCURRENCY && this.queue.length > 0) {
      const job = this.queue.shift() as (typeof this.queue)[number]
      this.writers++
      this.write(job.cid, job.bytes).then(() => {}, (err: Error) => {
        this.log?.warn({ cid: job.cid.toString(), err: err.message }, 'cannot store a fetched block')
      }).finally(() => {
        this.writers--
        this.pending.delete(job.k)
        job.done()
        this.pump()
      })
    }
  }

  /** Blocks fetched but not yet on disk. */
  get pendingWrites (): number {
    return this.pending.size
  }

  /** Resolves when every block handed to `putFetched` so far is on disk (or failed). */
  async flush (): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending.values()].map(async p => await p.write))
  }

  override async has (key: CID, options?: Parameters<FsBlockstore['has']>[1]): Promise<boolean> {
    if (this.pending.has(keyOf(key))) return true
    return await super.has(key, options)
  }

  override async * get (key: CID, options?: Parameters<FsBlockstore['get']>[1]): AsyncGenerator<Uint8Array> {
    const held = this.pending.get(keyOf(key))
    if (held != null) {
      yield held.bytes
      return
    }
    options?.signal?.throwIfAborted()
    const { dir, file } = this.sharding.encode(key)
    let bytes: Uint8Array
    try {
      bytes = await readWhole(join(this.path, dir, file))
    } catch (err) {
      throw new NotFoundError(String(err))
    }
    yield bytes
  }

  override async delete (key: CID, options?: Parameters<FsBlockstore['delete']>[1]): Promise<void> {
    // A write still under way would put the block back after the delete.
    await this.pending.get(keyOf(key))?.write
    await super.delete(key, options)
  }

  override async close (): Promise<void> {
    await this.flush()
    await super.close()
  }

  private async write (key: CID, val: Parameters<FsBlockstore['put']>[1], options?: Parameters<FsBlockstore['put']>[2]): Promise<CID> {
    try {
      return await super.put(key, val, options)
    } catch (err) {
      const { dir, file } = this.sharding.encode(key)
      return await failedPut(err, join(this.path, dir, file))
    }
  }
}

/** A file's bytes with one read (blocks are ≤ a few MiB; the size comes from fstat). */
async function readWhole (path: string): Promise<Uint8Array> {
  const fh = await open(path, 'r')
  try {
    // Most blocks are small (a file's data, a tar header): one read into a scratch buffer ends
    // at EOF, so no fstat round trip through the thread pool is needed for them.
    const first = Buffer.allocUnsafe(FIRST_READ)
    const { bytesRead } = await fh.read(first, 0, FIRST_READ, 0)
    if (bytesRead < FIRST_READ) return Uint8Array.prototype.slice.call(first, 0, bytesRead)
    const { size } = await fh.stat()
    const buf = Buffer.allocUnsafe(size)
    first.copy(buf, 0, 0, Math.min(bytesRead, size))
    let got = Math.min(bytesRead, size)
    while (got < size) {
      const { bytesRead: n } = await fh.read(buf, got, size - got, got)
      if (n === 0) break
      got += n
    }
    return got === size ? buf : buf.subarray(0, got)
  } finally {
    // Not waited for: the bytes are read; closing is one more thread-pool round trip.
    fh.close().catch(() => {})
  }
}

/** Fetched blocks written to disk at once (see `RepoBlockstore.pump`). */
const WRITE_BEHIND_CONCURRENCY = 1

/** Bytes of the first read of a block file (a small block is read whole by it). */
const FIRST_READ = 64 << 10

/** Datastore keys whose records are a cache: libp2p's peer store (peers' addresses, protocols). */
const PEERS_PREFIX = '/peers/'

const isPeerKey = (key: Key): boolean => key.toString().startsWith(PEERS_PREFIX)

/**
 * The repo's datastore: datastore-fs, except libp2p's peer records, which live in memory.
 * libp2p rewrites the remote peer's record on every stream it opens or accepts
 * (`peerStore.merge` in `newStream`/`onIncomingStream`, even when nothing changed): with
 * datastore-fs that is a file written per stream on both sides, ~4 ms of the ~6 ms a stream
 * took to open on loopback, and it fails on a full disk. Our peers are given as full multiaddrs
 * (static peers, `dial`), so nothing needs them across restarts. Records written by older
 * versions stay on disk unread.
 */
export class RepoDatastore extends FsDatastore {
  private readonly peers = new Map<string, { key: Key, value: Uint8Array }>()

  override async put (key: Key, val: Uint8Array, options?: Parameters<FsDatastore['put']>[2]): Promise<Key> {
    if (isPeerKey(key)) {
      this.peers.set(key.toString(), { key, value: val })
      return key
    }
    try {
      return await super.put(key, val, options)
    } catch (err) {
      return await failedPut(err, this._encode(key).file)
    }
  }

  override async get (key: Key, options?: Parameters<FsDatastore['get']>[1]): Promise<Uint8Array> {
    if (!isPeerKey(key)) return await super.get(key, options)
    const rec = this.peers.get(key.toString())
    if (rec == null) throw new NotFoundError(`no peer record ${key.toString()}`)
    return rec.value
  }

  override async has (key: Key, options?: Parameters<FsDatastore['has']>[1]): Promise<boolean> {
    return isPeerKey(key) ? this.peers.has(key.toString()) : await super.has(key, options)
  }

  override async delete (key: Key, options?: Parameters<FsDatastore['delete']>[1]): Promise<void> {
    if (isPeerKey(key)) this.peers.delete(key.toString())
    else await super.delete(key, options)
  }

  override async * _all (q: Parameters<FsDatastore['_all']>[0], options?: Parameters<FsDatastore['_all']>[1]): AsyncGenerator<{ key: Key, value: Uint8Array }> {
    // (the base class's `query` filters by prefix, filters, orders, offset and limit afterwards)
    for (const { key, value } of this.peers.values()) yield { key, value }
    if (q.prefix?.startsWith(PEERS_PREFIX.slice(0, -1)) === true) return
    for await (const pair of super._all(q, options)) if (!isPeerKey(pair.key)) yield pair
  }

  override async * _allKeys (q: Parameters<FsDatastore['_allKeys']>[0], options?: Parameters<FsDatastore['_allKeys']>[1]): AsyncGenerator<Key> {
    for (const { key } of this.peers.values()) yield key
    if (q.prefix?.startsWith(PEERS_PREFIX.slice(0, -1)) === true) return
    for await (const key of super._allKeys(q, options)) if (!isPeerKey(key)) yield key
  }
}
