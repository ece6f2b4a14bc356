/**
 * A set of byte ranges [start, end) kept as sorted, disjoint, non-adjacent intervals: ranges
 * added back to back (a layer's leaves, read in file order) merge into one, so a set over a
 * whole pack file stays a handful of numbers.
 */
export class RangeSet {
  /** Interval starts and ends, sorted; `ends[i]` < `starts[i + 1]`. */
  private readonly starts: number[] = []
  private readonly ends: number[] = []

  /** Intervals held. */
  get size (): number {
    return this.starts.length
  }

  /** Index of the last interval starting at or before `at` (-1: none). */
  private before (at: number): number {
    let lo = 0
    let hi = this.starts.length - 1
    let found = -1
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1
      if (this.starts[mid] <= at) {
        found = mid
        lo = mid + 1
      } else {
        hi = mid - 1
      }
    }
    return found
  }

  /** Adds [start, end), merging it with every interval it overlaps or touches. */
  add (start: number, end: number): void {
    if (end <= start) return
    let i = this.before(start)
    if (i >= 0 && this.ends[i] >= start) {
      start = this.starts[i]
    } else {
      i++
    }
    // intervals i … j-1 are swallowed
    let j = i
    while (j < this.starts.length && this.starts[j] <= end) {
      end = Math.max(end, this.ends[j])
      j++
    }
    this.starts.splice(i, j - i, start)
    this.ends.splice(i, j - i, end)
  }

  /** Whether every byte of [start, end) is in the set (an empty range always is). */
  covers (start: number, end: number): boolean {
    if (end <= start) return true
    const i = this.before(start)
    return i >= 0 && this.ends[i] >= end
  }
}
