/**
 * Wall-clock time in nanoseconds. containerd's test suite checks that `created`/`updated` fall
 * between two `time.Now()` readings taken around the call, so millisecond `Date.now()` (which
 * truncates, and can put a timestamp before the caller's earlier reading) is not good enough.
 * We run the monotonic high-resolution clock at an offset from the wall clock. Every reading of
 * `Date.now()` (which floors) gives a lower bound for that offset, and any scheduling delay only
 * makes a measured bound smaller, so the offset is the largest bound seen: this clock is never
 * ahead of the wall clock and converges on it. It is re-anchored now and then, so a wall-clock
 * step (NTP) does not stick.
 */
const REANCHOR_NS = 10_000_000_000n
const ANCHOR_ROUNDS = 3

let offset: bigint | undefined
let anchoredAt = 0n
let last = 0n

/** Lower bound of the offset at a millisecond tick (the best single measurement). */
function measureAtTick (): bigint {
  const start = Date.now()
  let now = start
  while (now === start) now = Date.now()
  return BigInt(now) * 1_000_000n - process.hrtime.bigint()
}

/** Current time in ns since the Unix epoch; strictly increasing within the process. */
export function nowNs (): bigint {
  const ms = Date.now()
  const mono = process.hrtime.bigint()
  if (offset == null || mono - anchoredAt > REANCHOR_NS) {
    let best = measureAtTick()
    for (let i = 1; i < ANCHOR_ROUNDS; i++) {
      const m = measureAtTick()
      if (m > best) best = m
    }
    offset = best
    anchoredAt = mono
  }
  const bound = BigInt(ms) * 1_000_000n - mono
  if (bound > offset) offset = bound
  let t = mono + offset
  if (t <= last) t = last + 1n
  last = t
  return t
}
