import * as dagPb from '@ipld/dag-pb'
import type { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import type { PinStore } from './pins.js'
import type { Logger } from '../logging.js'
import { checkAbort, collectBlock } from './dag-reader.js'

/** Garbage collection defaults, in one place. */
export const DEFAULTS = {
  /**
   * Blocks whose last use is remembered (for least-recently-used eviction). Older uses are
   * forgotten, and a block with no remembered use counts as older than all that have one: the
   * order stays right, only the oldest blocks lose their order among themselves.
   */
  maxTrackedBlocks: 200_000,
  /**
   * A cap-triggered collection evicts until the blockstore holds at most this fraction of the
   * cap, so that it does not run again at the next few writes.
   */
  lowWaterRatio: 0.9
} as const

/** The blockstore key of a block: the multihash (a v0 and a v1 CID of one block are one block). */
export function blockKey (cid: CID): string {
  const mh = cid.multihash.bytes
  return Buffer.from(mh.buffer, mh.byteOffset, mh.byteLength).toString('base64')
}

/**
 * The blockstore operations a collection and its guard see: interface-blockstore's `has`, `get`,
 * `delete`, `getAll` (`put`, `putMany` and a write-behind `putFetched` are wrapped when present).
 */
export interface GcBlockstore {
  has: (cid: CID, options?: { signal?: AbortSignal }) => Promise<boolean>
  get: (cid: CID, options?: { signal?: AbortSignal }) => AsyncIterable<Uint8Array> | Iterable<Uint8Array>
  delete: (cid: CID, options?: { signal?: AbortSignal }) => Promise<void>
  getAll: (options?: { signal?: AbortSignal }) => AsyncIterable<{ cid: CID, bytes: AsyncIterable<Uint8Array> | Iterable<Uint8Array> }>
}

/** Holds blocks against collection while it is open (see `GcGuard`). */
export interface Lease {
  /** Keeps this block too (blocks the repo's store touches while the lease is open are kept already). */
  add: (cid: CID) => void
  release: () => void
}

interface Run {
  /** Blocks touched or leased while the run went on. */
  keep: Set<string>
}

/**
 * What keeps a collection from removing blocks that work in progress needs, and what remembers
 * which blocks were used last.
 *
 * - A **lease** (a push, an import, a pull, a pin being added) keeps every block the repo's
 *   blockstore stores or reads while it is open: a push writes its blocks well before it pins
 *   the image, and a collection in between must not take them.
 * - While a **collection runs**, every block touched is kept by that run, and a lease released
 *   during the run hands its blocks to the run: what the mark phase could not see yet (a pin
 *   added after it) is still kept.
 * - A block being **deleted** is waited for by a write of the same block, so a write never lands
 *   before the delete and vanishes with it.
 *
 * `instrument` wraps the store instance's methods once, so every path to it (Helia's, the
 * importer's, the fetcher's write-behind) goes through the guard.
 */
export class GcGuard {
  private readonly leases = new Set<Set<string>>()
  private readonly runs = new Set<Run>()
  private readonly deleting = new Map<string, Promise<void>>()
  /** Last use by key (a counter, not a time: only the order matters), oldest first. */
  private readonly lastUse = new Map<string, number>()
  private clock = 0
  /** Bytes written since `resetWritten` (a block written twice counts twice: an estimate from above). */
  private written = 0
  private changeCount = 0

  constructor (private readonly options: { maxTrackedBlocks?: number } = {}) {}

  lease (): Lease {
    const held = new Set<string>()
    this.leases.add(held)
    let open = true
    return {
      add: (cid) => { if (open) held.add(blockKey(cid)) },
      release: () => {
        if (!open) return
        open = false
        this.leases.delete(held)
        for (const run of this.runs) for (const k of held) run.keep.add(k)
      }
    }
  }

  /** Whether a block is held by a lease or was touched during a running collection. */
  held (key: string): boolean {
    for (const l of this.leases) if (l.has(key)) return true
    for (const r of this.runs) if (r.keep.has(key)) return true
    return false
  }

  /** The use counter of a block (0: not used since the node started, or forgotten). */
  usedAt (key: string): number {
    return this.lastUse.get(key) ?? 0
  }

  /** Writes and unpins so far: a collection that could not get under a cap may succeed after one. */
  get changes (): number {
    return this.changeCount
  }

  /** Something may have become garbage (an unpin). */
  noteChange (): void {
    this.changeCount++
  }

  get writtenBytes (): number {
    return this.written
  }

  resetWritten (): void {
    this.written = 0
  }

  /** Marks a block used now, and held by the open leases and running collections. */
  touch (cid: CID, key = blockKey(cid)): void {
    this.lastUse.delete(key)
    this.lastUse.set(key, ++this.clock)
    if (this.lastUse.size > (this.options.maxTrackedBlocks ?? DEFAULTS.maxTrackedBlocks)) {
      this.lastUse.delete(this.lastUse.keys().next().value as string)
    }
    for (const l of this.leases) l.add(key)
    for (const r of this.runs) r.keep.add(key)
  }

  /** A write of `cid`: touched first, then it waits for a delete of the same block under way. */
  async beforeWrite (cid: CID, bytes: number): Promise<void> {
    const key = blockKey(cid)
    this.touch(cid, key)
    this.written += bytes
    this.changeCount++
    await this.deleting.get(key)
  }

  /** @internal a collection's run */
  beginRun (): Run {
    const run = { keep: new Set<string>() }
    this.runs.add(run)
    return run
  }

  /** @internal */
  endRun (run: Run): void {
    this.runs.delete(run)
  }

  /**
   * Deletes a block unless something holds it now; the check and the registration of the delete
   * happen in one turn of the event loop, so a write that starts later waits for the delete.
   */
  async deleteUnlessHeld (store: GcBlockstore, cid: CID, key: string, isLive: (key: string) => boolean): Promise<boolean> {
    if (isLive(key) || this.held(key) || this.deleting.has(key)) return false
    const p = store.delete(cid).finally(() => this.deleting.delete(key))
    this.deleting.set(key, p)
    await p
    return true
  }

  /**
   * Wraps the store instance's `put`, `putMany`, `putFetched`, `get`, `readMany` and `has` (those it has), so
   * every caller of this object goes through the guard. Calls the store makes on itself (`super.*`)
   * are not wrapped.
   */
  instrument<T extends object> (store: T): T {
    const s = store as Record<string, unknown>
    const wrap = (name: string, make: (orig: (...args: any[]) => any) => (...args: any[]) => any): void => {
      const orig = s[name]
      if (typeof orig !== 'function') return
      s[name] = make((orig as (...args: any[]) => any).bind(store))
    }
    const sizeOf = (v: unknown): number => v instanceof Uint8Array ? v.length : 0
    wrap('put', orig => async (cid: CID, bytes: unknown, opts?: unknown) => {
      await this.beforeWrite(cid, sizeOf(bytes))
      return await orig(cid, bytes, opts)
    })
    const guard = this
    wrap('putMany', orig => (source: AsyncIterable<{ cid: CID, bytes: unknown }> | Iterable<{ cid: CID, bytes: unknown }>, opts?: unknown) => orig((async function * () {
      for await (const pair of source) {
        await guard.beforeWrite(pair.cid, sizeOf(pair.bytes))
        yield pair
      }
    })(), opts))
    // a write-behind store: the fetched block is held from the moment it is handed over
    wrap('putFetched', orig => (cid: CID, bytes: Uint8Array) => {
      const key = blockKey(cid)
      this.touch(cid, key)
      this.written += bytes.length
      this.changeCount++
      const deleting = this.deleting.get(key)
      if (deleting == null) return orig(cid, bytes)
      // rare: the block is being collected right now; write it once that is done
      void deleting.then(() => orig(cid, bytes))
      return true
    })
    wrap('get', orig => (cid: CID, opts?: unknown) => {
      this.touch(cid)
      return orig(cid, opts)
    })
    wrap('readMany', orig => (cids: CID[], opts?: unknown) => {
      for (const cid of cids) this.touch(cid)
      return orig(cids, opts)
    })
    wrap('has', orig => async (cid: CID, opts?: unknown) => {
      this.touch(cid)
      return await orig(cid, opts)
    })
    return store
  }
}

/** What a collection needs. */
export interface GcComponents {
  blockstore: GcBlockstore
  pins: Pick<PinStore, 'ls'>
  guard: GcGuard
  logger: Logger
  /** More roots to keep (with every block of theirs stored here): the layers mounted now. */
  roots?: (signal?: AbortSignal) => Promise<CID[]>
}

export interface GcOptions {
  /** Count what would be removed, remove nothing. */
  dryRun?: boolean
  /**
   * Remove only until the blockstore holds at most this many bytes, least recently used first
   * (a cap). Absent: remove every block no pin, mount or lease keeps.
   */
  targetBytes?: number
  signal?: AbortSignal
}

export interface GcReport {
  dryRun: boolean
  /** Blocks and bytes in the blockstore before. */
  blocks: number
  bytes: number
  /** Blocks and bytes kept because a pin, a mount or work in progress needs them. */
  liveBlocks: number
  liveBytes: number
  /** Removed (or, with dryRun, removable) blocks and bytes. */
  freedBlocks: number
  freedBytes: number
  /** Pins and other roots the mark phase walked. */
  roots: number
  /** Unpinned blocks left because work in progress held them (a later run may take them). */
  heldBlocks: number
  durationMs: number
}

/** A chunk cache's collection: entries removed (or removable) and kept. */
export interface ChunkGcReport {
  entries: number
  bytes: number
  keptEntries: number
  keptBytes: number
}

/** Every local block under `root` (absent blocks and what is below them are skipped: a lazy image holds only what was read). */
async function markFrom (root: CID, store: GcBlockstore, live: Set<string>, maxDepth: number, signal?: AbortSignal): Promise<void> {
  const stack: Array<{ cid: CID, depth: number }> = [{ cid: root, depth: 0 }]
  while (stack.length > 0) {
    checkAbort(signal)
    const { cid, depth } = stack.pop() as { cid: CID, depth: number }
    const key = blockKey(cid)
    if (live.has(key)) continue
    if (cid.code === raw.code) {
      // a leaf: its CID is all the mark needs (whether it is stored is the sweep's business)
      live.add(key)
      continue
    }
    let bytes: Uint8Array
    try {
      bytes = await collectBlock(store.get(cid, { signal }))
    } catch (err) {
      if ((err as Error).name === 'NotFoundError') continue // not fetched (a lazy image), or gone
      throw err
    }
    live.add(key)
    if (cid.code !== dagPb.code || depth >= maxDepth) continue
    for (const l of dagPb.decode(bytes).Links) stack.push({ cid: l.Hash, depth: depth + 1 })
  }
}

/**
 * One mark-and-sweep over the blockstore. Mark: every block stored under a pin (to the pin's
 * depth) or under an extra root. Sweep: every other block not held by the guard is removed, all
 * of them, or (with `targetBytes`) the least recently used first until the store is under it.
 * Runs alongside reads, pulls and pushes: see `GcGuard`.
 */
export async function collectGarbage (components: GcComponents, options: GcOptions = {}): Promise<GcReport> {
  const { blockstore: store, guard } = components
  const { signal } = options
  const log = components.logger.child({ component: 'gc' })
  const started = Date.now()
  const run = guard.beginRun()
  try {
    const live = new Set<string>()
    let roots = 0
    for await (const pin of components.pins.ls({ signal })) {
      roots++
      await markFrom(pin.cid, store, live, pin.depth ?? Infinity, signal)
    }
    for (const cid of await components.roots?.(signal) ?? []) {
      roots++
      await markFrom(cid, store, live, Infinity, signal)
    }
    const garbage: Array<{ cid: CID, key: string, size: number }> = []
    let blocks = 0
    let bytes = 0
    let liveBlocks = 0
    let liveBytes = 0
    for await (const pair of store.getAll({ signal })) {
      let size = 0
      for await (const piece of pair.bytes) size += piece.length
      blocks++
      bytes += size
      const key = blockKey(pair.cid)
      if (live.has(key)) {
        liveBlocks++
        liveBytes += size
      } else {
        garbage.push({ cid: pair.cid, key, size })
      }
    }
    // least recently used first (never used since the node started: first of all)
    garbage.sort((a, b) => guard.usedAt(a.key) - guard.usedAt(b.key))
    let freedBlocks = 0
    let freedBytes = 0
    let heldBlocks = 0
    let remaining = bytes
    for (const g of garbage) {
      if (options.targetBytes != null && remaining <= options.targetBytes) break
      checkAbort(signal)
      if (options.dryRun === true ? guard.held(g.key) : !await guard.deleteUnlessHeld(store, g.cid, g.key, k => live.has(k))) {
        heldBlocks++
        continue
      }
      freedBlocks++
      freedBytes += g.size
      remaining -= g.size
    }
    if (options.dryRun !== true) guard.resetWritten()
    const report: GcReport = {
      dryRun: options.dryRun === true,
      blocks,
      bytes,
      liveBlocks,
      liveBytes,
      freedBlocks,
      freedBytes,
      roots,
      heldBlocks,
      durationMs: Date.now() - started
    }
    // a cap-triggered run that freed nothing says so at debug level (the caller warns once)
    log[freedBlocks > 0 || options.targetBytes == null ? 'info' : 'debug'](report, options.dryRun === true ? 'garbage collection (dry run)' : 'garbage collection')
    return report
  } finally {
    guard.endRun(run)
  }
}

/** The target of a cap-triggered collection: `DEFAULTS.lowWaterRatio` of the cap. */
export function lowWater (capBytes: number): number {
  return Math.floor(capBytes * DEFAULTS.lowWaterRatio)
}

/**
 * The repo's collector: one collection at a time (a second caller waits for the first, then runs
 * its own), with the extra roots the daemon adds (its mounted layers).
 */
export class Collector {
  private last: Promise<unknown> = Promise.resolve()
  private roots?: (signal?: AbortSignal) => Promise<CID[]>

  /** `listed`: roots the repo itself keeps besides its pins (listed images' descriptor JSON). */
  constructor (private readonly components: Omit<GcComponents, 'roots'> & { listed?: () => CID[] }) {}

  get guard (): GcGuard {
    return this.components.guard
  }

  /** Roots kept besides the pins (the daemon's mounted layers). */
  setRoots (roots: ((signal?: AbortSignal) => Promise<CID[]>) | undefined): void {
    this.roots = roots
  }

  /** Chunk caches collected with the blocks (the daemon's: in the FUSE manager or its own). */
  private chunks?: (options: { dryRun?: boolean, signal?: AbortSignal }) => Promise<ChunkGcReport>

  setChunkCollector (chunks: ((options: { dryRun?: boolean, signal?: AbortSignal }) => Promise<ChunkGcReport>) | undefined): void {
    this.chunks = chunks
  }

  /** Collects the chunk cache, when one is attached. */
  async runChunks (options: { dryRun?: boolean, signal?: AbortSignal } = {}): Promise<ChunkGcReport | undefined> {
    return await this.chunks?.(options)
  }

  async run (options: GcOptions = {}): Promise<GcReport> {
    const roots = async (signal?: AbortSignal): Promise<CID[]> => [...this.components.listed?.() ?? [], ...await this.roots?.(signal) ?? []]
    const go = async (): Promise<GcReport> => await collectGarbage({ ...this.components, roots }, options)
    const p = this.last.then(go, go)
    this.last = p.catch(() => {})
    return await p
  }
}
