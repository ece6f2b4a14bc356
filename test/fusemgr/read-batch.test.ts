import { describe, expect, it } from 'vitest'
import { BlobReadError } from '../../src/fusemgr/errors.js'
import { ReadBatch, type ReadBatchComponents } from '../../src/fusemgr/read-batch.js'

const blob = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251))

/** Components over `blob` that record each request. */
function fake (overrides: Partial<ReadBatchComponents> = {}): ReadBatchComponents & { ones: Array<[number, number]>, manys: Array<Array<[number, number]>>, signals: AbortSignal[] } {
  const ones: Array<[number, number]> = []
  const manys: Array<Array<[number, number]>> = []
  const signals: AbortSignal[] = []
  return {
    ones,
    manys,
    signals,
    readOne: async (offset, length) => { ones.push([offset, length]); return blob.subarray(offset, offset + length) },
    readMany: async (ranges, signal) => {
      manys.push(ranges)
      signals.push(signal)
      return Buffer.concat(ranges.map(([o, l]) => blob.subarray(o, o + l)))
    },
    size: async () => blob.length,
    ...overrides
  }
}

describe('ReadBatch', () => {
  it('reads started in one turn go as one request; each gets its own bytes, a range past the end cut there', async () => {
    const c = fake()
    const batch = new ReadBatch(c, { maxRanges: 64, maxBytes: 1 << 20 })
    const ranges: Array<[number, number]> = [[500, 10], [0, 3], [990, 50], [1200, 4], [100, 0], [7, 1]]
    const got = await Promise.all(ranges.map(async ([o, l]) => await batch.read(o, l)))
    ranges.forEach(([o, l], i) => { expect(Buffer.from(got[i])).toEqual(blob.subarray(o, o + l)) })
    expect(c.manys).toEqual([ranges])
    expect(c.ones).toEqual([])
    // a read alone is a request of its own
    expect(Buffer.from(await batch.read(20, 5))).toEqual(blob.subarray(20, 25))
    expect(c.ones).toEqual([[20, 5]])
  })

  it('splits a batch at maxRanges and at maxBytes', async () => {
    const c = fake()
    const batch = new ReadBatch(c, { maxRanges: 3, maxBytes: 100 })
    await Promise.all([[0, 10], [10, 10], [20, 10], [30, 10], [40, 60], [100, 50]].map(async ([o, l]) => await batch.read(o, l)))
    expect(c.manys).toEqual([[[0, 10], [10, 10], [20, 10]], [[30, 10], [40, 60]]])
    expect(c.ones).toEqual([[100, 50]])
  })

  it('a read that gives up is answered at once with its reason; the request is cancelled only when all have', async () => {
    let answer: (b: Uint8Array) => void = () => {}
    const c = fake({ readMany: async (_ranges, signal) => { c.signals.push(signal); return await new Promise<Uint8Array>(resolve => { answer = resolve }) } })
    const batch = new ReadBatch(c, { maxRanges: 64, maxBytes: 1 << 20 })
    const a = new AbortController()
    const b = new AbortController()
    const ra = batch.read(0, 10, a.signal)
    const rb = batch.read(10, 10, b.signal)
    await new Promise(resolve => setImmediate(resolve))
    const why = new Error('timed out')
    a.abort(why)
    await expect(ra).rejects.toBe(why)
    expect(c.signals[0].aborted).toBe(false)
    answer(blob.subarray(0, 20))
    expect(Buffer.from(await rb)).toEqual(blob.subarray(10, 20))

    const c2 = fake({ readMany: async (_ranges, signal) => { c2.signals.push(signal); return await new Promise<Uint8Array>(() => {}) } })
    const batch2 = new ReadBatch(c2, { maxRanges: 64, maxBytes: 1 << 20 })
    const acs = [new AbortController(), new AbortController()]
    const reads = acs.map(async (ac, i) => await batch2.read(i * 10, 10, ac.signal))
    await new Promise(resolve => setImmediate(resolve))
    for (const ac of acs) ac.abort(new Error('gave up'))
    for (const r of reads) await expect(r).rejects.toThrow('gave up')
    expect(c2.signals[0].aborted).toBe(true)
    // an already aborted signal is refused before anything is sent
    await expect(batch2.read(0, 1, AbortSignal.abort(new Error('before')))).rejects.toThrow('before')
  })

  it('a failed request, or an answer of the wrong length, fails every read of the batch', async () => {
    const c = fake({ readMany: async () => { throw new BlobReadError('daemon blob API: boom', { status: 502 }) } })
    const batch = new ReadBatch(c, { maxRanges: 64, maxBytes: 1 << 20 })
    const reads = [batch.read(0, 5), batch.read(5, 5)]
    for (const r of reads) await expect(r).rejects.toThrow('boom')

    const short = fake({ readMany: async () => blob.subarray(0, 7) })
    const batch2 = new ReadBatch(short, { maxRanges: 64, maxBytes: 1 << 20 })
    const reads2 = [batch2.read(0, 5), batch2.read(5, 5)]
    for (const r of reads2) await expect(r).rejects.toBeInstanceOf(BlobReadError)
  })
})
