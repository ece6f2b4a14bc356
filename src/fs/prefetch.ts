import { DEFAULTS } from './config.js'
import { chunksInBlobOrder, firstIndex, type ChunkReader, type LaidOutChunk } from './chunk-reader.js'
import type { Chunk, LayerNode, LayerTree } from '../estargz/index.js'
import type { Logger } from '../logging.js'

export interface PrefetcherComponents {
  reader: ChunkReader
  tree: LayerTree
  logger: Logger
  /** The tree's chunks in blob order (`chunksInBlobOrder`), when the caller has them already: a large layer's take tens of ms to build. */
  layout?: readonly LaidOutChunk[]
}

export interface PrefetchOptions {
  /** How long a wait for the prioritized region lasts (`start()`'s, or `waitForPrioritized()`'s). */
  prefetchTimeoutMs?: number
  /**
   * `start()` waits for the prioritized region. false (the reference's way): `start()` only
   * begins it, and whoever is about to run the layer's workload waits with `waitForPrioritized()`,
   * so a pull's mounts do not wait for their prefetches one after another.
   */
  waitForPrefetchAtMount?: boolean
  /** Fetch the rest of the layer in the background afterwards. */
  backgroundFetch?: boolean
  backgroundConcurrency?: number
  /** Background steps wait until on-demand reads have been quiet this long. */
  backgroundQuietMs?: number
  /** Compressed bytes per background step. */
  backgroundStepBytes?: number
  /** Fetches in flight at once for the prioritized region and for `prefetchRanges`. */
  prefetchConcurrency?: number
}

/** What `prefetchRanges` did. */
export interface RangePrefetchResult {
  /** Chunks the ranges touch, and their compressed bytes (a gzip member shared by chunks once). */
  chunks: number
  bytes: number
  /** Why it stopped early (a failed fetch, the layer stopped); undefined when all are cached. */
  error?: string
}

export interface PrefetchStatus {
  /** Compressed bytes of file data in the layer (every chunk once). */
  totalBytes: number
  /** Compressed bytes of those chunks now in the cache (fetched or found there). */
  fetchedBytes: number
  /** Compressed bytes before `.prefetch.landmark` (0 without one). */
  prioritizedBytes: number
  /** True once the prioritized region is cached. */
  prioritizedDone: boolean
  /** True once every chunk of the layer is cached. */
  complete: boolean
  /** Last error of the background fetch, if it gave up. */
  error?: string
}

interface Item { node: LayerNode, chunk: Chunk, bytes: number }

/**
 * Prefetch, as the reference does it: at mount, everything before `.prefetch.landmark` is
 * fetched and cached (a wait for it lasts up to `prefetchTimeoutMs`; a timeout is logged, not
 * fatal); then the rest of the layer is fetched in the background, yielding to on-demand reads,
 * so the mount keeps working once the source is gone.
 */
export class Prefetcher {
  private readonly reader: ChunkReader
  private readonly log: Logger
  private readonly opts: Required<PrefetchOptions>
  private readonly prioritized: Item[] = []
  private readonly rest: Item[] = []
  private readonly status: PrefetchStatus
  private readonly ac = new AbortController()
  private background?: Promise<void>
  /** Without `waitForPrefetchAtMount`: settles once the background fetch started or was not to start. */
  private backgroundGate?: Promise<void>
  /** The prioritized region's fetch, once started; settles when it is cached or failed. */
  private prioritizedWork?: Promise<void>
  /** Outcomes already logged: several waits for one region report it once. */
  private readonly reported = new Set<string>()
  private readonly counted = new WeakSet<Item>()
  /** Every chunk of the layer in blob order (each gzip member's bytes counted once). */
  private readonly items: Item[]

  constructor (components: PrefetcherComponents, options: PrefetchOptions = {}) {
    this.reader = components.reader
    this.log = components.logger
    this.opts = {
      prefetchTimeoutMs: options.prefetchTimeoutMs ?? DEFAULTS.prefetchTimeoutMs,
      backgroundFetch: options.backgroundFetch ?? DEFAULTS.backgroundFetch,
      backgroundConcurrency: Math.max(1, options.backgroundConcurrency ?? DEFAULTS.backgroundConcurrency),
      backgroundQuietMs: options.backgroundQuietMs ?? DEFAULTS.backgroundQuietMs,
      backgroundStepBytes: options.backgroundStepBytes ?? DEFAULTS.backgroundStepBytes,
      waitForPrefetchAtMount: options.waitForPrefetchAtMount ?? DEFAULTS.waitForPrefetchAtMount,
      prefetchConcurrency: Math.max(1, options.prefetchConcurrency ?? DEFAULTS.prefetchConcurrency)
    }
    const tree = components.tree
    const limit = tree.noPrefetch ? 0 : tree.prefetchOffset ?? 0
    const items: Item[] = (components.layout ?? chunksInBlobOrder(new Set(tree.byName.values()))).map(it => ({ ...it, bytes: 0 }))
    // Chunks sharing a gzip member (innerOffset) share its bytes: count the member once.
    for (let i = 0; i < items.length; i++) {
      const c = items[i].chunk
      const next = items[i + 1]?.chunk
      items[i].bytes = next != null && next.offset === c.offset ? 0 : c.compressedEnd - c.offset
    }
    this.items = items
    for (const it of items) (it.chunk.offset < limit ? this.prioritized : this.rest).push(it)
    const sum = (xs: Item[]): number => xs.reduce((n, x) => n + x.bytes, 0)
    this.status = { totalBytes: sum(items), fetchedBytes: 0, prioritizedBytes: sum(this.prioritized), prioritizedDone: this.prioritized.length === 0, complete: items.length === 0 }
  }

  /**
   * Starts fetching the prioritized region, and the background fetch once that region is cached,
   * failed or past its timeout. With `waitForPrefetchAtMount`, resolves after that wait; otherwise at once.
   */
  async start (): Promise<void> {
    if (this.prioritized.length > 0) {
      this.prioritizedWork = this.run(this.prioritized, this.opts.prefetchConcurrency, false).then(() => { this.status.prioritizedDone = true })
      this.prioritizedWork.catch(() => {})
    }
    const startBackground = (): void => {
      if (this.opts.backgroundFetch && !this.status.complete && !this.ac.signal.aborted) this.background = this.runBackground()
    }
    if (this.opts.waitForPrefetchAtMount) {
      await this.waitForPrioritized()
      startBackground()
    } else {
      this.backgroundGate = this.waitForPrioritized().then(startBackground)
    }
  }

  /**
   * Waits until the prioritized region is cached, up to `prefetchTimeoutMs` from this call; a
   * timeout or a failed fetch is logged (once), not thrown: the reads then fetch what they need.
   * Resolves at once without a prioritized region, when the layer stops, and once a wait has
   * timed out (every later check of the layer would otherwise wait the whole timeout again).
   */
  async waitForPrioritized (): Promise<void> {
    const work = this.prioritizedWork
    if (work == null || this.status.prioritizedDone || this.reported.has('timeout')) return
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<'timeout'>(resolve => { timer = setTimeout(() => resolve('timeout'), this.opts.prefetchTimeoutMs) })
    // stop() (a cancelled mount) ends the wait at once: the reads in flight may take long
    let onStop: (() => void) | undefined
    const stopped = new Promise<'stopped'>(resolve => { onStop = () => resolve('stopped') })
    this.ac.signal.addEventListener('abort', onStop as () => void, { once: true })
    try {
      const r = this.ac.signal.aborted ? 'stopped' : await Promise.race([work.then(() => 'done' as const, (err: Error) => err), timedOut, stopped])
      const outcome = r instanceof Error ? 'failed' : r
      if (this.reported.has(outcome)) return
      this.reported.add(outcome)
      if (r === 'timeout') this.log.warn({ timeoutMs: this.opts.prefetchTimeoutMs }, 'prefetch did not finish in time; going on without it')
      else if (r === 'stopped') this.log.debug('prefetch stopped')
      else if (r instanceof Error) this.log.warn({ err: r.message }, 'prefetch failed; going on without it')
      else this.log.debug({ bytes: this.status.prioritizedBytes }, 'prefetch done')
    } finally {
      clearTimeout(timer)
      this.ac.signal.removeEventListener('abort', onStop as () => void)
    }
  }

  /**
   * Caches the chunks that `ranges` (offset and length in the compressed blob) touch, in the
   * ranges' order: a prefetch record says in which order a container will read the layer. Like
   * the prioritized region's, the fetches are prefetch reads (as urgent as on-demand ones) and do
   * not wait for quiet: the point is to be ahead of the reads. Ends early when the layer stops.
   */
  async prefetchRanges (ranges: ReadonlyArray<readonly [number, number]>): Promise<RangePrefetchResult> {
    const wanted: Item[] = []
    const seen = new Set<Item>()
    for (const [offset, length] of ranges) {
      // from the first chunk whose compressed bytes end after `offset`
      for (let i = firstIndex(this.items, it => it.chunk.compressedEnd > offset); i < this.items.length && this.items[i].chunk.offset < offset + length; i++) {
        const it = this.items[i]
        if (!seen.has(it)) { seen.add(it); wanted.push(it) }
      }
    }
    const result: RangePrefetchResult = { chunks: wanted.length, bytes: wanted.reduce((n, it) => n + it.bytes, 0) }
    try {
      // small steps keep the fetches close to the record's order
      await this.run(wanted, this.opts.prefetchConcurrency, false, DEFAULTS.rangeStepBytes)
      if (this.ac.signal.aborted) result.error = 'the layer stopped'
    } catch (err) {
      result.error = (err as Error).message
    }
    return result
  }

  async stop (): Promise<void> {
    this.ac.abort()
    await this.backgroundGate
    await this.background
  }

  /** Resolves when the background fetch has finished (or given up). */
  async done (): Promise<void> {
    await this.backgroundGate
    await this.background
  }

  progress (): PrefetchStatus {
    return { ...this.status }
  }

  private async runBackground (): Promise<void> {
    try {
      // The prioritized region may have timed out: it is fetched again (cached parts are skipped).
      await this.run(this.status.prioritizedDone ? this.rest : [...this.prioritized, ...this.rest], this.opts.backgroundConcurrency, true)
      if (!this.ac.signal.aborted) {
        this.status.complete = true
        this.log.info({ bytes: this.status.totalBytes }, 'layer fully fetched')
      }
    } catch (err) {
      this.status.error = (err as Error).message
      this.log.warn({ err: (err as Error).message }, 'background fetch stopped')
    }
  }

  /** Caches `items` in steps of up to `stepBytes`, `concurrency` steps at a time. */
  private async run (items: Item[], concurrency: number, yieldToReads: boolean, stepBytes = this.opts.backgroundStepBytes): Promise<void> {
    const steps: Item[][] = []
    let step: Item[] = []
    let size = 0
    for (const it of items) {
      if (step.length > 0 && size + it.bytes > stepBytes) {
        steps.push(step)
        step = []
        size = 0
      }
      step.push(it)
      size += it.bytes
    }
    if (step.length > 0) steps.push(step)
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < steps.length && !this.ac.signal.aborted) {
        const s = steps[next++]
        if (yieldToReads) await this.reader.activity.whenQuiet(this.opts.backgroundQuietMs, this.ac.signal)
        if (this.ac.signal.aborted) return
        // one step's files together: a run of them in blob order is one source read, not one
        // each; what does not yield to reads is what a container is about to read: as urgent
        await this.reader.ensureCachedAll(s, { prefetch: !yieldToReads })
        for (const it of s) {
          if (this.counted.has(it)) continue
          this.counted.add(it)
          this.status.fetchedBytes += it.bytes
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(concurrency, steps.length) }, worker))
  }
}
