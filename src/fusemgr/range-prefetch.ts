import type { LayerFs } from '../fs/index.js'
import type { Logger } from '../logging.js'
import type { RangePrefetchStats } from './api.js'
import { FuseManagerError } from './errors.js'

export interface RangePrefetchesOptions {
  /** Ranges one request may name. */
  maxRanges: number
  /** Layers whose ranges wait for the layer to be opened, at most... */
  maxWaiting: number
  /** ...and for at most this long each. */
  waitingTtlMs: number
}

/** Where a layer is open now (mounted, or opened ahead of its mount). */
export type FindLayer = (cid: string) => LayerFs | Promise<LayerFs | undefined> | undefined

/**
 * Ranges of layers to cache in a given order (`POST /v1/prefetch`): a prefetch record learned
 * from a node that ran the image. They go into the chunk cache the mounts read from, so a
 * container's first reads find them here instead of asking the daemon. A layer that is not open
 * yet gets its ranges when it is (a pull's warm call or its mount), if that happens soon.
 */
export class RangePrefetches {
  private readonly waiting = new Map<string, { ranges: Array<[number, number]>, expires: number }>()
  private readonly counters: RangePrefetchStats = { requests: 0, started: 0, finished: 0, chunks: 0, bytes: 0, failed: 0, expired: 0 }

  constructor (private readonly components: { logger: Logger, find: FindLayer }, private readonly options: RangePrefetchesOptions) {}

  stats (): RangePrefetchStats {
    return { ...this.counters, waiting: this.waiting.size }
  }

  /** Starts the prefetch on the open layer, or keeps the ranges for when it opens. */
  offer (cid: unknown, ranges: unknown): 'started' | 'waiting' {
    if (typeof cid !== 'string' || cid === '') throw new FuseManagerError('prefetch needs { cid, ranges }', { status: 400 })
    const checked = checkRanges(ranges, this.options.maxRanges)
    this.counters.requests++
    const open = this.components.find(cid)
    if (open != null) {
      // not open after all (its mount failed): kept for the next open, as if it were not found
      void Promise.resolve(open).then(fs => { fs != null ? this.start(cid, fs, checked) : this.wait(cid, checked) }, () => { this.wait(cid, checked) })
      return 'started'
    }
    this.wait(cid, checked)
    return 'waiting'
  }

  /** A layer was opened: its waiting ranges (if any) start now. */
  opened (cid: string, fs: LayerFs): void {
    this.sweep()
    const w = this.waiting.get(cid)
    if (w == null) return
    this.waiting.delete(cid)
    this.start(cid, fs, w.ranges)
  }

  private wait (cid: string, ranges: Array<[number, number]>): void {
    this.sweep()
    this.waiting.delete(cid)
    while (this.waiting.size >= this.options.maxWaiting) {
      this.waiting.delete(this.waiting.keys().next().value as string)
      this.counters.expired++
    }
    this.waiting.set(cid, { ranges, expires: Date.now() + this.options.waitingTtlMs })
  }

  private sweep (): void {
    const now = Date.now()
    for (const [cid, w] of this.waiting) {
      if (w.expires <= now) {
        this.waiting.delete(cid)
        this.counters.expired++
      }
    }
  }

  private start (cid: string, fs: LayerFs, ranges: Array<[number, number]>): void {
    const log = this.components.logger.child({ cid })
    const started = performance.now()
    this.counters.started++
    void fs.prefetcher.prefetchRanges(ranges).then((r) => {
      this.counters.finished++
      this.counters.chunks += r.chunks
      this.counters.bytes += r.bytes
      if (r.error != null) this.counters.failed++
      const fields = { ranges: ranges.length, chunks: r.chunks, bytes: r.bytes, ms: Math.round(performance.now() - started) }
      if (r.error != null) log.warn({ ...fields, err: r.error }, 'prefetch of recorded ranges stopped early')
      else log.info(fields, 'recorded ranges cached')
    })
  }
}

/** `[offset, length]` pairs of non-negative safe integers, at most `max` of them. */
function checkRanges (ranges: unknown, max: number): Array<[number, number]> {
  const bad = (why: string): FuseManagerError => new FuseManagerError(`prefetch: ${why}`, { status: 400 })
  if (!Array.isArray(ranges)) throw bad('ranges must be an array of [offset, length]')
  if (ranges.length > max) throw bad(`${ranges.length} ranges, more than the ${max} allowed`)
  return ranges.map((r: unknown) => {
    if (!Array.isArray(r) || r.length !== 2 || !r.every(n => Number.isSafeInteger(n) && (n as number) >= 0)) throw bad('each range must be [offset, length] of non-negative integers')
    return [r[0] as number, r[1] as number]
  })
}
