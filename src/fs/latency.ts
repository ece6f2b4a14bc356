import { DEFAULTS } from './config.js'

/**
 * Counts of durations per bucket, as a Prometheus histogram holds them: `counts[i]` durations
 * ≤ `boundsMs[i]` and above the bound before it (not cumulative), the last entry those above
 * every bound. Plain numbers, so a snapshot crosses the FUSE manager's API as JSON.
 */
export interface LatencyCounts {
  boundsMs: number[]
  counts: number[]
  sumMs: number
  count: number
}

/** A latency histogram over fixed bounds (`DEFAULTS.fetchLatencyBucketsMs` unless given). */
export class LatencyHistogram {
  private readonly bounds: readonly number[]
  private readonly counts: number[]
  private sumMs = 0
  private count = 0

  constructor (boundsMs: readonly number[] = DEFAULTS.fetchLatencyBucketsMs) {
    this.bounds = boundsMs
    this.counts = new Array<number>(boundsMs.length + 1).fill(0)
  }

  observe (ms: number): void {
    let i = 0
    while (i < this.bounds.length && ms > this.bounds[i]) i++
    this.counts[i]++
    this.sumMs += ms
    this.count++
  }

  snapshot (): LatencyCounts {
    return { boundsMs: [...this.bounds], counts: [...this.counts], sumMs: this.sumMs, count: this.count }
  }
}
