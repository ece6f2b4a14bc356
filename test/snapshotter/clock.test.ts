import { describe, expect, it } from 'vitest'
import { nowNs } from '../../src/snapshotter/clock.js'

describe('nowNs', () => {
  it('is never behind the wall clock, never a millisecond ahead, and strictly increasing', () => {
    let prev = 0n
    for (let i = 0; i < 100_000; i++) {
      const before = BigInt(Date.now()) * 1_000_000n
      const t = nowNs()
      const after = (BigInt(Date.now()) + 1n) * 1_000_000n
      expect(t >= before && t < after && t > prev, `reading ${i}: ${before} <= ${t} < ${after}, previous ${prev}`).toBe(true)
      prev = t
    }
  })
})
