import { setMaxListeners } from 'node:events'
import { ChunkDigestMismatchError, MalformedGzipError, TruncatedBlobError, decodeChunk, type Chunk, type LayerNode } from '../estargz/index.js'
import { DEFAULTS } from './config.js'
import { ChunkVerificationError, FetchTimeoutError, FsError, SourceReadError } from './errors.js'
import { Activity } from './activity.js'
import type { ChunkCache } from './cache.js'
import { LatencyHistogram, type LatencyCounts } from './latency.js'
import type { Logger } from '../logging.js'
import type { RangeSource } from '../source/index.js'

export interface ChunkReaderComponents {
  source: RangeSource
  cache: ChunkCache
  logger: Logger
  /** On-demand work of the whole process (shared by its layers); one of its own when omitted. */
  activity?: Activity
  /**
   * Every chunk of the layer in blob order (the `neighbours` of a read are taken from it);
   * without it reads fetch no neighbours.
   */
  layout?: readonly LaidOutChunk[]
}

/** A chunk of a layer with the file it belongs to, in blob order. */
export interface LaidOutChunk { node: LayerNode, chunk: Chunk }

/** The layer's chunks in blob order, each gzip member once. */
export function chunksInBlobOrder (nodes: Iterable<LayerNode>): LaidOutChunk[] {
  const all: LaidOutChunk[] = []
  for (const node of nodes) {
    if (node.type !== 'reg') continue
    for (const chunk of node.chunks) all.push({ node, chunk })
  }
  // sorted (stably), a chunk listed twice is next to its first listing, which stays: no key per chunk to build
  all.sort((a, b) => a.chunk.offset - b.chunk.offset || a.chunk.innerOffset - b.chunk.innerOffset)
  const out: LaidOutChunk[] = []
  for (const it of all) {
    const last = out[out.length - 1]?.chunk
    if (last != null && last.offset === it.chunk.offset && last.innerOffset === it.chunk.innerOffset) continue
    out.push(it)
  }
  return out
}

export interface ChunkReaderOptions {
  /** A source read slower than this fails the reads waiting on it. */
  fetchTimeoutMs?: number
  /** Largest compressed span fetched by one coalesced source read. */
  maxCoalesceBytes?: number
  /** On-demand reads verify every chunk of the aligned window of this size around them (0: off). */
  readWindowBytes?: number
  /** A read that misses also fetches the chunks after it in the blob, up to this many compressed bytes (0: off). */
  neighbourBytes?: number
}

export interface ReadOptions {
  signal?: AbortSignal
  /** Background (prefetch) reads do not count as on-demand activity. */
  background?: boolean
}

export interface ReaderStats {
  /** Compressed bytes read from the source. */
  bytesFetched: number
  /** Source reads made (a coalesced read of several chunks counts once). */
  fetches: number
  /** File bytes returned to readers. */
  bytesServed: number
  /** Chunk pieces served from the memory or disk cache. */
  cacheHits: number
  /** Chunk pieces that had to be fetched (or joined an in-flight fetch). */
  cacheMisses: number
  /** Chunks that failed verification and were refused. */
  verificationFailures: number
  fetchTimeouts: number
  sourceErrors: number
  /** Compressed bytes read from the source, by who wanted them: a reader, a prefetch, the background fetch. */
  fetchedBytes: Record<Priority, number>
  /** File bytes served from the memory or disk cache. */
  cacheHitBytes: number
  /** How long source reads took (failed ones included). */
  fetchMs: LatencyCounts
}

interface Piece { chunk: Chunk, from: number, to: number }

/** Of a fetch: a container waits (`demand`), it soon will (`prefetch`), or nobody does (`background`). */
export type Priority = 'demand' | 'prefetch' | 'background'
/** Most urgent first. */
const URGENCY: Record<Priority, number> = { demand: 0, prefetch: 1, background: 2 }

/**
 * The verified read path: file range → chunks → cache, or compressed ranges → source →
 * decompress → check `chunkDigest` → cache → bytes. A chunk that fails verification is never
 * returned or cached. Concurrent readers of one chunk share one fetch, and the missing chunks
 * of one read whose compressed ranges touch are fetched with one source read.
 */
export class ChunkReader {
  private readonly source: RangeSource
  private readonly cache: ChunkCache
  private readonly log: Logger
  private readonly fetchTimeoutMs: number
  private readonly maxCoalesceBytes: number
  private readonly readWindowBytes: number
  private readonly neighbourBytes: number
  private readonly layout: readonly LaidOutChunk[]
  /** Chunk fetches under way, and the priority each was asked at. */
  private readonly inflight = new Map<string, { p: Promise<Uint8Array>, priority: Priority }>()
  private readonly counters: Omit<ReaderStats, 'fetchedBytes' | 'fetchMs'> = { bytesFetched: 0, fetches: 0, bytesServed: 0, cacheHits: 0, cacheMisses: 0, verificationFailures: 0, fetchTimeouts: 0, sourceErrors: 0, cacheHitBytes: 0 }
  private readonly fetchedBytes: Record<Priority, number> = { demand: 0, prefetch: 0, background: 0 }
  private readonly fetchMs = new LatencyHistogram()
  readonly activity: Activity

  constructor (components: ChunkReaderComponents, options: ChunkReaderOptions = {}) {
    this.source = components.source
    this.cache = components.cache
    this.log = components.logger
    this.activity = components.activity ?? new Activity()
    this.fetchTimeoutMs = options.fetchTimeoutMs ?? DEFAULTS.fetchTimeoutMs
    this.maxCoalesceBytes = options.maxCoalesceBytes ?? DEFAULTS.maxCoalesceBytes
    this.readWindowBytes = options.readWindowBytes ?? DEFAULTS.readWindowBytes
    this.neighbourBytes = options.neighbourBytes ?? DEFAULTS.neighbourBytes
    this.layout = components.layout ?? []
  }

  stats (): ReaderStats {
    return { ...this.counters, fetchedBytes: { ...this.fetchedBytes }, fetchMs: this.fetchMs.snapshot() }
  }

  /** Reads `length` bytes at `offset` of a regular file (fewer at its end). */
  async read (node: LayerNode, offset: number, length: number, options: ReadOptions = {}): Promise<Uint8Array> {
    const end = Math.min(node.size, offset + length)
    if (end <= offset) return new Uint8Array(0)
    const background = options.background === true
    const done = background ? undefined : this.activity.begin()
    try {
      const pieces = piecesOf(node, offset, end)
      const got = await Promise.all(pieces.map(async p => await this.cache.read(p.chunk.digest, p.from - p.chunk.chunkOffset, p.to - p.from)))
      const missing = pieces.filter((_, i) => got[i] == null)
      this.counters.cacheHits += pieces.length - missing.length
      for (const g of got) this.counters.cacheHitBytes += g?.length ?? 0
      this.counters.cacheMisses += missing.length
      const window = background ? [] : this.windowChunks(node, offset, end, pieces)
      if (missing.length > 0 || window.length > 0) {
        const wanted = [...missing.map(p => p.chunk), ...window]
        const neighbours = this.neighbours(wanted)
        const fetched = this.fetch(wanted.map(chunk => ({ node, chunk })))
        // A source read of their own, started with this one: the read waits for its own bytes only.
        if (neighbours.length > 0) this.fetch(neighbours)
        await Promise.all([
          ...pieces.map(async (p, i) => {
            if (got[i] != null) return
            const data = await raceSignal(fetched.get(p.chunk) as Promise<Uint8Array>, options.signal)
            got[i] = data.subarray(p.from - p.chunk.chunkOffset, p.to - p.chunk.chunkOffset)
          }),
          ...window.map(async c => await raceSignal(fetched.get(c) as Promise<Uint8Array>, options.signal))
        ])
      }
      let out: Uint8Array
      if (got.length === 1) {
        out = got[0] as Uint8Array
      } else {
        const buf = Buffer.allocUnsafe(end - offset)
        pieces.forEach((p, i) => buf.set(got[i] as Uint8Array, p.from - offset))
        out = buf
      }
      this.counters.bytesServed += out.length
      return out
    } finally {
      done?.()
    }
  }

  /**
   * The chunks of the read window around `[offset, end)` that the read itself does not touch
   * and the cache does not hold: they must verify too before the read is answered.
   */
  private windowChunks (node: LayerNode, offset: number, end: number, pieces: Piece[]): Chunk[] {
    const w = this.readWindowBytes
    if (w <= 0) return []
    const from = Math.floor(offset / w) * w
    const to = Math.min(node.size, Math.ceil(end / w) * w)
    const last = pieces[pieces.length - 1].chunk
    if (from >= pieces[0].chunk.chunkOffset && to <= last.chunkOffset + last.chunkSize) return []
    const touched = new Set(pieces.map(p => p.chunk))
    return piecesOf(node, from, to).map(p => p.chunk).filter(c => !touched.has(c) && !this.cache.has(c.digest))
  }

  /**
   * The chunks that follow the last of `wanted` in the blob, up to `neighbourBytes` compressed
   * bytes, that the cache does not hold: they come in the same source read (chunk ranges touch:
   * each runs to the next data member), so small files read together — a directory's files are
   * neighbours in tar order — cost one round trip instead of one each, as the reference's 50 kB
   * fetch regions do.
   */
  private neighbours (wanted: Chunk[]): LaidOutChunk[] {
    // Only a read that goes to the source brings neighbours: one that joins fetches already
    // under way (a neighbour of an earlier read) would otherwise start a tiny fetch per file.
    const fresh = wanted.filter(c => !this.inflight.has(keyOf(c)))
    if (this.neighbourBytes <= 0 || this.layout.length === 0 || fresh.length === 0) return []
    const last = Math.max(...fresh.map(c => c.offset))
    const lo = firstIndex(this.layout, it => it.chunk.offset > last)
    const out: LaidOutChunk[] = []
    let budget = this.neighbourBytes
    for (let i = lo; i < this.layout.length; i++) {
      const it = this.layout[i]
      budget -= it.chunk.compressedEnd - it.chunk.offset
      if (budget < 0) break
      if (!this.cache.has(it.chunk.digest) && !this.inflight.has(keyOf(it.chunk))) out.push(it)
    }
    return out
  }

  /**
   * Makes sure chunks are in the cache (on disk when it has one), fetching the missing ones
   * with coalesced source reads. Used by prefetch; returns the compressed bytes covered.
   */
  async ensureCached (node: LayerNode, chunks: Chunk[], options: { prefetch?: boolean } = {}): Promise<void> {
    await this.ensureCachedAll(chunks.map(chunk => ({ node, chunk })), options)
  }

  /**
   * `ensureCached` for the chunks of many files at once, in the order given: each stretch of
   * them that follow one another in the blob (files in tar order) comes in one source read, not
   * one read per file, and the stretches' reads start in the order given (a prefetch record's).
   */
  async ensureCachedAll (items: readonly LaidOutChunk[], options: { prefetch?: boolean } = {}): Promise<void> {
    const missing = items.filter(it => !this.cache.has(it.chunk.digest))
    if (missing.length === 0) return
    const priority = options.prefetch === true ? 'prefetch' : 'background'
    const waits: Array<Promise<Uint8Array> | undefined> = []
    let run: LaidOutChunk[] = []
    const flush = (): void => {
      if (run.length === 0) return
      const fetched = this.fetch(run, priority)
      for (const it of run) waits.push(fetched.get(it.chunk))
      run = []
    }
    for (const it of missing) {
      const prev = run[run.length - 1]?.chunk
      if (prev != null && it.chunk.offset !== prev.compressedEnd && it.chunk.offset !== prev.offset) flush()
      run.push(it)
    }
    flush()
    await Promise.all(waits)
  }

  /**
   * Starts (or joins) fetches for `chunks` and returns a promise per chunk. Chunks already in
   * flight are joined; the rest are grouped into runs of touching compressed ranges.
   */
  private fetch (items: LaidOutChunk[], priority: Priority = 'demand'): Map<Chunk, Promise<Uint8Array>> {
    const out = new Map<Chunk, Promise<Uint8Array>>()
    const todo: LaidOutChunk[] = []
    for (const it of items) {
      const running = this.inflight.get(keyOf(it.chunk))
      // A read joins a fetch of its chunk only if that one is at least as urgent. An on-demand
      // read does not wait behind a background fetch (the source serves that one last) nor a
      // prefetch (it comes in a batch of many ranges, answered together, behind on-demand
      // reads): it fetches the chunk again, ahead of them; the node's fetch path asks the
      // peers for its blocks once, and more urgently.
      if (running != null && URGENCY[running.priority] <= URGENCY[priority]) out.set(it.chunk, running.p)
      else if (!out.has(it.chunk) && !todo.some(t => t.chunk === it.chunk)) todo.push(it)
    }
    todo.sort((a, b) => a.chunk.offset - b.chunk.offset || a.chunk.innerOffset - b.chunk.innerOffset)
    let group: LaidOutChunk[] = []
    const flush = (): void => {
      if (group.length === 0) return
      const g = group
      group = []
      const start = g[0].chunk.offset
      const end = Math.max(...g.map(it => it.chunk.compressedEnd))
      const bytes = this.fetchRange(start, end - start, priority)
      // Attach handlers now so a failing group never becomes an unhandled rejection.
      bytes.catch(() => {})
      for (const { node, chunk: c } of g) {
        const key = keyOf(c)
        const entry = { p: this.decode(node, c, bytes, start, priority !== 'demand'), priority }
        const p = entry.p.finally(() => { if (this.inflight.get(key) === entry) this.inflight.delete(key) })
        p.catch(() => {})
        entry.p = p
        this.inflight.set(key, entry)
        out.set(c, p)
      }
    }
    for (const it of todo) {
      const c = it.chunk
      const prev = group[group.length - 1]?.chunk
      const touches = prev != null && (c.offset === prev.offset || c.offset === prev.compressedEnd)
      const span = prev != null ? Math.max(c.compressedEnd, prev.compressedEnd) - group[0].chunk.offset : 0
      if (prev != null && (!touches || span > this.maxCoalesceBytes)) flush()
      group.push(it)
    }
    flush()
    return out
  }

  private async decode (node: LayerNode, c: Chunk, bytes: Promise<Uint8Array>, start: number, untilStored: boolean): Promise<Uint8Array> {
    const all = await bytes
    const compressed = all.subarray(c.offset - start, c.compressedEnd - start)
    let data: Uint8Array
    try {
      data = await decodeChunk(compressed, node.name, c)
    } catch (err) {
      if (err instanceof ChunkDigestMismatchError || err instanceof MalformedGzipError || err instanceof TruncatedBlobError) {
        this.counters.verificationFailures++
        this.log.error({ path: node.name, chunkOffset: c.chunkOffset, chunkDigest: c.digest, blobOffset: c.offset, err: (err as Error).message }, 'chunk failed verification; refusing to serve it')
        throw new ChunkVerificationError(node.name, c.chunkOffset, (err as Error).message)
      }
      throw err
    }
    const stored = this.cache.put(c.digest, data)
    if (untilStored) await stored // prefetch counts a chunk once it is on disk
    else stored.catch(() => {})
    return data
  }

  /**
   * One source read with the fetch timeout; the source is asked to abort when it fires. Its
   * priority goes to the source as a hint: background reads wait behind on-demand ones, prefetch
   * reads are as urgent but are not the workload's.
   */
  private async fetchRange (offset: number, length: number, priority: Priority): Promise<Uint8Array> {
    const ac = new AbortController()
    setMaxListeners(Infinity, ac.signal)
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        this.counters.fetchTimeouts++
        const err = new FetchTimeoutError(offset, length, this.fetchTimeoutMs)
        ac.abort(err)
        reject(err)
      }, this.fetchTimeoutMs)
    })
    this.counters.fetches++
    const started = performance.now()
    try {
      // A source that ignores the signal must still not hold the read: race the timer.
      const hint = priority === 'background' ? { background: true } : priority === 'prefetch' ? { prefetch: true } : undefined
      const bytes = await Promise.race([this.source.read(offset, length, ac.signal, hint), timeout])
      this.counters.bytesFetched += bytes.length
      this.fetchedBytes[priority] += bytes.length
      if (bytes.length < length) throw new SourceReadError(`the source returned ${bytes.length} of ${length} bytes at ${offset}`)
      return bytes
    } catch (err) {
      if (err instanceof FsError) {
        if (!(err instanceof FetchTimeoutError)) this.counters.sourceErrors++
        this.log.warn({ offset, length, err: err.message }, 'layer fetch failed')
        throw err
      }
      this.counters.sourceErrors++
      this.log.warn({ offset, length, err: (err as Error).message }, 'layer fetch failed')
      throw new SourceReadError(`reading bytes ${offset}+${length} from the source failed: ${(err as Error).message}`, { cause: err })
    } finally {
      clearTimeout(timer)
      this.fetchMs.observe(performance.now() - started)
    }
  }
}

function keyOf (c: Chunk): string {
  return `${c.digest}@${c.offset}+${c.innerOffset}`
}

/**
 * The index of the first of `items` for which `after` holds, by binary search: `after` must be
 * false up to some index and true from there on (items in blob order). `items.length` if none.
 */
export function firstIndex<T> (items: readonly T[], after: (item: T) => boolean): number {
  let lo = 0
  let hi = items.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (after(items[mid])) hi = mid
    else lo = mid + 1
  }
  return lo
}

/** The chunks a file range touches, found by binary search (chunks tile the file in order). */
function piecesOf (node: LayerNode, offset: number, end: number): Piece[] {
  const chunks = node.chunks
  // the last chunk starting at or before `offset`
  const lo = Math.max(0, firstIndex(chunks, c => c.chunkOffset > offset) - 1)
  const out: Piece[] = []
  for (let i = lo; i < chunks.length && chunks[i].chunkOffset < end; i++) {
    const c = chunks[i]
    out.push({ chunk: c, from: Math.max(offset, c.chunkOffset), to: Math.min(end, c.chunkOffset + c.chunkSize) })
  }
  return out
}

async function raceSignal<T> (p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (signal == null) return await p
  signal.throwIfAborted()
  return await new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort))
  })
}
