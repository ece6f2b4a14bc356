import type { Logger } from '../logging.js'
import { DEFAULTS as RECORD_DEFAULTS } from './record.js'
import { InvalidOptionError } from './errors.js'

/** Recorder defaults, in one place. */
export const DEFAULTS = {
  /** A layer's reads are recorded for this long after its first one; then the record closes. */
  windowMs: 60_000,
  /** Ranges one record holds at most; a full record closes at once. */
  maxRanges: RECORD_DEFAULTS.maxRanges,
  /** Bytes one record covers at most (what it can make another node prefetch). */
  maxBytes: RECORD_DEFAULTS.maxPrefetchBytes,
  /**
   * A window that ends with fewer ranges does not close the record: a pull reads only a layer's
   * footer and TOC, and the container may run much later. The next read opens a new window.
   */
  minRanges: 3,
  /** Layers recorded at once; reads of more layers are not recorded. */
  maxLayers: 256,
  /** Layers whose record closed, remembered so that later reads do not start another. */
  maxClosedLayers: 4096
} as const

export type RecorderOptions = { -readonly [K in keyof typeof DEFAULTS]?: number }

/** A closed recording: the layer's ranges in first-read order. */
export interface Recording {
  layer: string
  ranges: Array<[number, number]>
  /** When its window opened (ms since the epoch). */
  firstReadAt: number
}

interface Open {
  ranges: Array<[number, number]>
  /** What the ranges cover, as sorted, disjoint, non-adjacent [start, end) intervals. */
  covered: Array<[number, number]>
  bytes: number
  firstReadAt?: number
  timer?: NodeJS.Timeout
}

/**
 * Records, per layer, the order in which byte ranges of its blob were first read on demand (a
 * container's reads through the FUSE manager): each read adds the parts of its range no earlier
 * read covered, merged into the previous range when it continues it. Only offsets and lengths
 * are kept. A recording closes `windowMs` after its layer's first read, when it is full
 * (`maxRanges`, `maxBytes`), or when asked (`close`, at unmount or stop); `onClose` gets it then.
 */
export class Recorder {
  private readonly open = new Map<string, Open>()
  private readonly closed = new Map<string, true>()
  private readonly opts: Required<RecorderOptions>
  private readonly log: Logger
  /** Reads not recorded because `maxLayers` layers were being recorded. */
  dropped = 0

  constructor (private readonly components: { logger: Logger, onClose: (r: Recording) => void, now?: () => number }, options: RecorderOptions = {}) {
    this.opts = { ...DEFAULTS, ...options }
    for (const [k, v] of Object.entries(this.opts)) {
      if (!Number.isSafeInteger(v) || v < (k === 'minRanges' ? 0 : 1)) throw new InvalidOptionError(`prefetch recorder: ${k} must be a ${k === 'minRanges' ? 'non-negative' : 'positive'} integer, got ${String(v)}`)
    }
    this.log = components.logger.child({ component: 'prefetch-recorder' })
  }

  private now (): number {
    return this.components.now?.() ?? Date.now()
  }

  /** One on-demand read of `length` bytes at `offset` of the layer blob `layer`. */
  read (layer: string, offset: number, length: number): void {
    if (length <= 0 || !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || this.closed.has(layer)) return
    let rec = this.open.get(layer)
    if (rec == null) {
      if (this.open.size >= this.opts.maxLayers) { this.dropped++; return }
      rec = { ranges: [], covered: [], bytes: 0 }
      this.open.set(layer, rec)
    }
    if (rec.firstReadAt == null) {
      rec.firstReadAt = this.now()
      rec.timer = setTimeout(() => { this.windowEnded(layer) }, this.opts.windowMs)
      rec.timer.unref()
    }
    for (let [start, end] of uncovered(rec.covered, offset, offset + length)) {
      end = Math.min(end, start + this.opts.maxBytes - rec.bytes)
      if (end <= start) break
      const last = rec.ranges[rec.ranges.length - 1]
      if (last != null && last[0] + last[1] === start) last[1] += end - start
      else rec.ranges.push([start, end - start])
      rec.bytes += end - start
      cover(rec.covered, start, end)
      if (rec.ranges.length >= this.opts.maxRanges) break
    }
    if (rec.ranges.length >= this.opts.maxRanges || rec.bytes >= this.opts.maxBytes) this.finish(layer, 'full')
  }

  /**
   * Closes the layer's recording now (its last mount is gone): it is handed on if it holds
   * `minRanges` ranges, else dropped (a later mount records again).
   */
  close (layer: string): void {
    const rec = this.open.get(layer)
    if (rec == null) return
    if (rec.ranges.length >= this.opts.minRanges) this.finish(layer, 'closed')
    else this.discard(layer)
  }

  /** Closes every recording (the daemon stops), handing on those with enough ranges. */
  closeAll (): void {
    for (const layer of [...this.open.keys()]) this.close(layer)
  }

  /** Layers being recorded, and their range counts (for logs and tests). */
  recording (): Map<string, number> {
    return new Map([...this.open].map(([l, r]) => [l, r.ranges.length]))
  }

  private windowEnded (layer: string): void {
    const rec = this.open.get(layer)
    if (rec == null) return
    if (rec.ranges.length >= this.opts.minRanges) {
      this.finish(layer, 'window')
      return
    }
    // Only a pull's reads so far: wait for the container's (the next read opens a new window).
    rec.firstReadAt = undefined
    rec.timer = undefined
    this.log.debug({ layer, ranges: rec.ranges.length }, 'record window ended with too few ranges: waiting for more reads')
  }

  private discard (layer: string): void {
    const rec = this.open.get(layer)
    if (rec == null) return
    clearTimeout(rec.timer)
    this.open.delete(layer)
  }

  private finish (layer: string, why: 'window' | 'full' | 'closed'): void {
    const rec = this.open.get(layer)
    if (rec == null) return
    this.discard(layer)
    this.closed.set(layer, true)
    while (this.closed.size > this.opts.maxClosedLayers) this.closed.delete(this.closed.keys().next().value as string)
    this.log.debug({ layer, ranges: rec.ranges.length, bytes: rec.bytes, why }, 'prefetch record closed')
    this.components.onClose({ layer, ranges: rec.ranges, firstReadAt: rec.firstReadAt ?? this.now() })
  }
}

/** Index of the first interval of `set` that ends after `at`. */
function firstEndingAfter (set: Array<[number, number]>, at: number): number {
  let lo = 0
  let hi = set.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (set[mid][1] <= at) lo = mid + 1
    else hi = mid
  }
  return lo
}

/** The parts of [start, end) that `set` does not cover, in order. */
export function uncovered (set: Array<[number, number]>, start: number, end: number): Array<[number, number]> {
  const out: Array<[number, number]> = []
  let at = start
  for (let i = firstEndingAfter(set, start); i < set.length && at < end; i++) {
    const [s, e] = set[i]
    if (s >= end) break
    if (s > at) out.push([at, s])
    at = Math.max(at, e)
  }
  if (at < end) out.push([at, end])
  return out
}

/** Adds [start, end) to `set`, merging what it touches. */
export function cover (set: Array<[number, number]>, start: number, end: number): void {
  const i = firstEndingAfter(set, start - 1) // an interval ending exactly at `start` merges too
  let j = i
  while (j < set.length && set[j][0] <= end) {
    start = Math.min(start, set[j][0])
    end = Math.max(end, set[j][1])
    j++
  }
  set.splice(i, j - i, [start, end])
}
