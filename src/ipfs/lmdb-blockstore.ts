import { mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import { BaseBlockstore } from 'blockstore-core'
import type { Pair } from 'interface-blockstore'
import { open as openLmdb, type Database, type RootDatabase } from 'lmdb'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import * as Digest from 'multiformats/hashes/digest'
import type { Logger } from '../logging.js'
import { toSpaceError } from './errors.js'
import { NotFoundError, type RepoBlockstore } from './stores.js'
import { WriteBehindQueue } from './write-behind.js'

/** LMDB blockstore defaults, in one place. */
export const DEFAULTS = {
  /**
   * Bytes of blocks handed to `put`/`putFetched` and not yet committed. A `put` past it waits
   * for commits: the writer (a push) runs at most this far ahead of the disk.
   */
  maxPendingBytes: 32 << 20,
  /** Keys read between two yields to the event loop in `getAll` (the key walk is synchronous). */
  scanBatch: 256
} as const

export interface LmdbBlockstoreOptions {
  maxPendingBytes?: number
  /**
   * A blockstore-fs folder written by earlier versions: read (and deleted from) after LMDB, never
   * written. Its blocks stay readable until `migrateLegacy` has moved them.
   */
  legacy?: RepoBlockstore
}

type Bytes = Parameters<BaseBlockstore['put']>[1]

/** The key of a block: its multihash (as blockstore-fs: one block per content, any codec). */
const keyOf = (cid: CID): Buffer => Buffer.from(cid.multihash.bytes.buffer, cid.multihash.bytes.byteOffset, cid.multihash.bytes.byteLength)
const pendingKey = (cid: CID): string => keyOf(cid).toString('base64')

async function bytesOf (val: Bytes): Promise<Uint8Array> {
  if (val instanceof Uint8Array) return val
  const parts: Uint8Array[] = []
  for await (const p of val) parts.push(p)
  return Buffer.concat(parts)
}

/**
 * The repo's blockstore: every block in one LMDB file (`blockstore/blocks.mdb`), keyed by its
 * multihash.
 *
 * - **Writes batch.** `put` hands the block to lmdb-js, which commits everything handed over in
 *   the same event-loop turn in one transaction on its own thread; `put` returns once the block
 *   is queued (readable from memory until committed) so a push does not wait for each commit,
 *   and waits only when `maxPendingBytes` are queued. `flush()` is the barrier: it resolves when
 *   every block queued so far is committed, or throws the first write error since the last
 *   `flush` (a full disk: NoSpaceError). An image is listed only after a flush.
 * - **Crash safety.** A transaction is committed whole or not at all (LMDB's copy-on-write
 *   B-tree, meta page written last): after `kill -9` a block is either absent or its bytes.
 * - **No main-thread disk reads.** `get` first has lmdb-js touch the value's pages on its worker
 *   thread (`prefetch`), then copies them.
 * - `putFetched`/`pendingWrites`/`flush` as `RepoBlockstore` (the fetch path writes behind).
 */
export class LmdbBlockstore extends BaseBlockstore {
  private env?: RootDatabase
  private db?: Database<Buffer, Buffer>
  private readonly queue: WriteBehindQueue
  readonly legacy?: RepoBlockstore

  /** `path`: the LMDB data file (its lock file is `<path>-lock`). */
  constructor (readonly path: string, options: LmdbBlockstoreOptions = {}, private readonly log?: Logger) {
    super()
    this.queue = new WriteBehindQueue(options.maxPendingBytes ?? DEFAULTS.maxPendingBytes)
    this.legacy = options.legacy
  }

  async open (): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true })
    try {
      // encoding 'binary': values are stored as given; no msgpack, no cache of decoded values.
      this.env = openLmdb({ path: this.path, noSubdir: true, encoding: 'binary', keyEncoding: 'binary', cache: false })
    } catch (err) {
      throw toSpaceError(err, this.path)
    }
    this.db = this.env as unknown as Database<Buffer, Buffer>
    await this.legacy?.open()
  }

  private get store (): Database<Buffer, Buffer> {
    if (this.db == null) throw new Error('blockstore is not open')
    return this.db
  }

  override async put (key: CID, val: Bytes, options?: { signal?: AbortSignal }): Promise<CID> {
    options?.signal?.throwIfAborted()
    this.queue.throwFailure()
    if (this.queue.has(pendingKey(key))) return key
    const bytes = await bytesOf(val)
    await this.queue.room()
    this.enqueue(key, bytes)
    return key
  }

  /**
   * Stores a verified block fetched from the network without waiting for the disk. The caller
   * must have checked `bytes` against `cid`. False when the block was being written already.
   */
  putFetched (cid: CID, bytes: Uint8Array): boolean {
    if (this.queue.has(pendingKey(cid))) return false
    this.enqueue(cid, bytes, true)
    return true
  }

  private enqueue (cid: CID, bytes: Uint8Array, fetched = false): void {
    const k = pendingKey(cid)
    const write = this.store.put(keyOf(cid), Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)).then(() => {}, (err: unknown) => {
      const e = toSpaceError(err, this.path)
      // A fetched block is fetched again on the next read; a pushed one fails the push's flush.
      if (fetched) this.log?.warn({ cid: cid.toString(), err: (e as Error).message }, 'cannot store a fetched block')
      else this.queue.fail(e)
    }).finally(() => { this.queue.settle(k, bytes.byteLength) })
    this.queue.add(k, bytes, write)
  }

  /** Blocks queued but not yet committed. */
  get pendingWrites (): number {
    return this.queue.size
  }

  /** Resolves when every block queued so far is committed; throws the first write error since the last flush. */
  async flush (): Promise<void> {
    await this.queue.drain()
    await this.legacy?.flush()
    this.queue.throwFailure()
  }

  override async has (key: CID, options?: { signal?: AbortSignal }): Promise<boolean> {
    options?.signal?.throwIfAborted()
    if (this.queue.has(pendingKey(key))) return true
    if (this.store.doesExist(keyOf(key))) return true
    return this.legacy != null && await this.legacy.has(key)
  }

  override async * get (key: CID, options?: { signal?: AbortSignal }): AsyncGenerator<Uint8Array> {
    const held = this.queue.get(pendingKey(key))
    if (held != null) {
      yield held.bytes
      return
    }
    options?.signal?.throwIfAborted()
    const k = keyOf(key)
    await this.store.prefetch([k])
    const bytes = this.store.getBinary(k)
    if (bytes != null) {
      yield bytes
      return
    }
    if (this.legacy == null) throw new NotFoundError(`block ${key.toString()} not found`)
    yield * this.legacy.get(key, options)
  }

  override async delete (key: CID, options?: { signal?: AbortSignal }): Promise<void> {
    options?.signal?.throwIfAborted()
    // A write still under way would put the block back after the delete.
    await this.queue.get(pendingKey(key))?.write
    try {
      await this.store.remove(keyOf(key))
    } catch (err) {
      throw toSpaceError(err, this.path)
    }
    if (this.legacy != null && await this.legacy.has(key)) await this.legacy.delete(key)
  }

  /**
   * Every block: CIDs are v1 raw (the store keeps multihashes, as blockstore-fs), bytes read only
   * when the pair's `bytes` is iterated. Blocks of the legacy folder follow, unless also here.
   */
  override async * getAll (options?: { signal?: AbortSignal }): AsyncGenerator<Pair> {
    await this.flush().catch(() => {}) // queued blocks first; a write error is the writer's to see
    const db = this.store
    let n = 0
    for (const k of db.getKeys({ snapshot: false }) as Iterable<Buffer>) {
      if (++n % DEFAULTS.scanBatch === 0) {
        await new Promise(resolve => setImmediate(resolve))
        options?.signal?.throwIfAborted()
      }
      const key = Buffer.from(k)
      const store = this
      yield {
        cid: CID.createV1(raw.code, Digest.decode(key)),
        bytes: (async function * () { yield * store.get(CID.createV1(raw.code, Digest.decode(key))) })()
      }
    }
    if (this.legacy == null) return
    for await (const pair of this.legacy.getAll(options)) {
      if (!db.doesExist(keyOf(pair.cid))) yield pair
    }
  }

  /**
   * Bytes the blocks take in the LMDB file (its pages in use: the file itself does not shrink
   * after deletes, freed pages are reused) and how many blocks it holds. Legacy blocks are not
   * counted.
   */
  usage (): { bytes: number, blocks: number } {
    const s = this.store.getStats() as { pageSize: number, treeBranchPageCount: number, treeLeafPageCount: number, overflowPages: number, entryCount: number }
    return { bytes: (s.treeBranchPageCount + s.treeLeafPageCount + s.overflowPages) * s.pageSize, blocks: s.entryCount }
  }

  async close (): Promise<void> {
    await this.flush().catch(() => {})
    await this.legacy?.close()
    const env = this.env
    this.env = undefined
    this.db = undefined
    await env?.close()
  }
}
