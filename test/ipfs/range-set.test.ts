import { randomInt } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { RangeSet } from '../../src/ipfs/range-set.js'

describe('RangeSet', () => {
  it('merges ranges added back to back, overlapping or swallowing others; keeps gaps apart', () => {
    const s = new RangeSet()
    s.add(0, 10)
    s.add(10, 20) // touching: one
    expect(s.size).toBe(1)
    expect(s.covers(0, 20)).toBe(true)
    s.add(30, 40)
    expect(s.size).toBe(2)
    expect(s.covers(15, 35)).toBe(false) // the gap 20–30
    expect(s.covers(30, 40)).toBe(true)
    expect(s.covers(29, 31)).toBe(false)
    s.add(50, 60)
    s.add(5, 55) // swallows the rest
    expect(s.size).toBe(1)
    expect(s.covers(0, 60)).toBe(true)
    expect(s.covers(0, 61)).toBe(false)
    s.add(7, 7) // empty: nothing
    expect(s.size).toBe(1)
    expect(s.covers(100, 100)).toBe(true)
  })

  it('agrees with a byte map over random adds', () => {
    for (let round = 0; round < 20; round++) {
      const s = new RangeSet()
      const bytes = new Uint8Array(2000)
      for (let i = 0; i < 60; i++) {
        const a = randomInt(2000)
        const b = a + randomInt(80)
        s.add(a, b)
        bytes.fill(1, a, Math.min(b, 2000))
      }
      for (let i = 0; i < 300; i++) {
        const a = randomInt(2000)
        const b = Math.min(2000, a + 1 + randomInt(100))
        expect(s.covers(a, b), `${a}-${b}`).toBe(bytes.subarray(a, b).every(x => x === 1))
      }
      // the intervals are as few as the runs of the map
      let runs = 0
      for (let i = 0; i < 2000; i++) if (bytes[i] === 1 && (i === 0 || bytes[i - 1] === 0)) runs++
      expect(s.size).toBe(runs)
    }
  })
})
