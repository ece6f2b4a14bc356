import { describe, expect, it } from 'vitest'
import { limiter } from '../src/limit.js'

describe('limiter', () => {
  it('never runs more than its limit at once, with callers arriving while others end, and runs them all in order', async () => {
    const limit = limiter(2)
    let active = 0
    let most = 0
    const task = async (ms: number): Promise<number> => {
      active++
      most = Math.max(most, active)
      await new Promise(resolve => setTimeout(resolve, ms))
      active--
      return ms
    }
    const first = Array.from({ length: 6 }, async (_, i) => await limit(async () => await task(5 + i)))
    // more callers while the first ones end
    const late = new Promise<number[]>(resolve => setTimeout(() => { void Promise.all(Array.from({ length: 6 }, async () => await limit(async () => await task(1)))).then(resolve) }, 6))
    const done = await Promise.all([...first, late])
    expect(done.slice(0, 6)).toEqual([5, 6, 7, 8, 9, 10])
    expect(most).toBe(2)
  })

  it('frees the slot of a task that fails', async () => {
    const limit = limiter(1)
    await expect(limit(async () => { throw new Error('boom') })).rejects.toThrow('boom')
    expect(await limit(async () => 7)).toBe(7)
  })
})
