import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { InvalidOptionError, InvalidPrefetchRecordError } from '../../src/prefetch-record/errors.js'
import { decodeRecord, DEFAULTS, encodeRecord, isRecordCid, recordCid, type PrefetchRecord } from '../../src/prefetch-record/record.js'
import { cover, Recorder, uncovered, type Recording } from '../../src/prefetch-record/recorder.js'
import { pieces } from '../../src/prefetch-record/prefetch.js'
import { silentLogger } from '../../src/logging.js'

const LAYER = 'bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy'
const SIZE = 10_000_000
const NOW = Date.UTC(2030, 0, 1)

const record = (over: Partial<PrefetchRecord> = {}): PrefetchRecord => ({ layer: LAYER, size: SIZE, created: NOW - 1000, ranges: [[100, 50], [0, 100], [5_000_000, 1_000_000]], ...over })
const json = (doc: unknown): Uint8Array => Buffer.from(JSON.stringify(doc))
const expectation = { layer: LAYER, size: SIZE, now: NOW }

describe('prefetch record format', () => {
  it('round-trips; its CID is raw sha2-256 of its bytes', () => {
    const { cid, bytes } = encodeRecord(record())
    expect(isRecordCid(cid)).toBe(true)
    expect(cid.code).toBe(raw.code)
    expect(cid.equals(recordCid(bytes))).toBe(true)
    expect(JSON.parse(Buffer.from(bytes).toString())).toEqual({ v: 1, layer: LAYER, size: SIZE, created: NOW - 1000, ranges: [[100, 50], [0, 100], [5_000_000, 1_000_000]] })
    expect(decodeRecord(bytes, expectation)).toEqual(record())
  })

  const hostile: Array<[string, Uint8Array, RegExp]> = [
    ['huge (past the byte cap, refused before parsing)', Buffer.alloc(DEFAULTS.maxRecordBytes + 1, 0x20), /more than 131072/],
    ['not JSON', Buffer.from('{"v":1,'), /not JSON/],
    ['not an object', json([1, 2]), /not a JSON object/],
    ['an extra field', json({ v: 1, layer: LAYER, size: SIZE, created: NOW, ranges: [], extra: 1 }), /fields/],
    ['another version', json({ v: 2, layer: LAYER, size: SIZE, created: NOW, ranges: [] }), /version 2/],
    ['another layer', json({ v: 1, layer: 'bafkreiother', size: SIZE, created: NOW, ranges: [] }), /made for layer "bafkreiother"/],
    ['another size', json({ v: 1, layer: LAYER, size: SIZE + 1, created: NOW, ranges: [] }), /says the layer is 10000001 bytes/],
    ['a time far in the future', json({ v: 1, layer: LAYER, size: SIZE, created: NOW + DEFAULTS.maxClockSkewMs + 1, ranges: [] }), /in the future/],
    ['a negative time', json({ v: 1, layer: LAYER, size: SIZE, created: -1, ranges: [] }), /not a time/],
    ['ranges not a list', json({ v: 1, layer: LAYER, size: SIZE, created: NOW, ranges: {} }), /not a list/],
    ['a range past the end of the layer', json({ v: 1, layer: LAYER, size: SIZE, created: NOW, ranges: [[0, 10], [SIZE - 5, 6]] }), /range 1 \(9999995\+6\) ends past/],
    ['a range at a huge offset', json({ v: 1, layer: LAYER, size: SIZE, created: NOW, ranges: [[Number.MAX_SAFE_INTEGER, 1]] }), /ends past/],
    ['an empty range', json({ v: 1, layer: LAYER, size: SIZE, created: NOW, ranges: [[0, 0]] }), /range 0 is not/],
    ['a fractional offset', json({ v: 1, layer: LAYER, size: SIZE, created: NOW, ranges: [[0.5, 1]] }), /range 0 is not/],
    ['a range of three numbers', json({ v: 1, layer: LAYER, size: SIZE, created: NOW, ranges: [[0, 1, 2]] }), /range 0 is not/],
    ['overlapping ranges', json({ v: 1, layer: LAYER, size: SIZE, created: NOW, ranges: [[100, 100], [0, 101]] }), /overlap/],
    ['too many ranges', json({ v: 1, layer: LAYER, size: SIZE, created: NOW, ranges: Array.from({ length: DEFAULTS.maxRanges + 1 }, (_, i) => [i, 1]) }), /2049 ranges, more than 2048/]
  ]
  for (const [what, bytes, message] of hostile) {
    it(`refuses a record with ${what}`, () => {
      expect(() => decodeRecord(bytes, expectation)).toThrow(InvalidPrefetchRecordError)
      expect(() => decodeRecord(bytes, expectation)).toThrow(message)
    })
  }

  it('refuses ranges adding up to more than the byte cap', () => {
    const bytes = json({ v: 1, layer: LAYER, size: SIZE, created: NOW, ranges: [[0, 600], [1000, 600]] })
    expect(() => decodeRecord(bytes, expectation, { maxPrefetchBytes: 1000 })).toThrow(/more than 1000 bytes/)
    expect(decodeRecord(bytes, expectation, { maxPrefetchBytes: 1200 }).ranges).toHaveLength(2)
  })

  it('will not write a record past the byte cap', () => {
    expect(() => encodeRecord(record({ ranges: Array.from({ length: 100 }, (_, i) => [i * 10, 5]) }), { maxRecordBytes: 200 })).toThrow(InvalidPrefetchRecordError)
  })

  it('the largest record the recorder can make fits the byte cap', () => {
    const ranges = Array.from({ length: DEFAULTS.maxRanges }, (_, i): [number, number] => [Number.MAX_SAFE_INTEGER - 2 * (DEFAULTS.maxRanges - i), 1])
    const { bytes } = encodeRecord(record({ size: Number.MAX_SAFE_INTEGER, ranges }))
    expect(bytes.length).toBeLessThanOrEqual(DEFAULTS.maxRecordBytes)
  })
})

describe('interval helpers', () => {
  it('uncovered and cover keep a sorted, merged set', () => {
    const set: Array<[number, number]> = []
    cover(set, 10, 20)
    cover(set, 30, 40)
    expect(uncovered(set, 0, 50)).toEqual([[0, 10], [20, 30], [40, 50]])
    expect(uncovered(set, 12, 18)).toEqual([])
    expect(uncovered(set, 15, 35)).toEqual([[20, 30]])
    cover(set, 20, 30) // touches both: one interval
    expect(set).toEqual([[10, 40]])
    cover(set, 0, 5)
    cover(set, 45, 50)
    cover(set, 5, 10)
    expect(set).toEqual([[0, 40], [45, 50]])
  })

  it('pieces split ranges in order at the piece size', () => {
    expect(pieces([[100, 25], [0, 10]], 10)).toEqual([[100, 10], [110, 10], [120, 5], [0, 10]])
  })
})

describe('Recorder', () => {
  let closed: Recording[]
  const recorder = (options = {}): Recorder => new Recorder({ logger: silentLogger(), onClose: (r) => closed.push(r) }, options)
  beforeEach(() => {
    closed = []
    vi.useFakeTimers()
  })
  afterEach(() => { vi.useRealTimers() })

  it('keeps first reads in order, only what no earlier read covered, merging continuations', () => {
    const r = recorder({ windowMs: 1000, minRanges: 1 })
    r.read('L', 500, 100) // [500, 600)
    r.read('L', 600, 50) // continues it: merged
    r.read('L', 0, 100)
    r.read('L', 50, 600) // only [100, 500) is new, and it continues the last range
    r.read('L', 520, 10) // covered
    r.read('L', 640, 20) // [650, 660) is new; it continues no last range
    expect(r.recording().get('L')).toBe(3)
    vi.advanceTimersByTime(999)
    expect(closed).toHaveLength(0)
    vi.advanceTimersByTime(1)
    expect(closed).toEqual([{ layer: 'L', ranges: [[500, 150], [0, 500], [650, 10]], firstReadAt: expect.any(Number) }])
    // closed: later reads of the layer are not recorded
    r.read('L', 10_000, 10)
    vi.advanceTimersByTime(5000)
    expect(closed).toHaveLength(1)
    expect(r.recording().size).toBe(0)
  })

  it('closes when full (ranges), keeping exactly the cap', () => {
    const r = recorder({ maxRanges: 5, minRanges: 1 })
    for (let i = 0; i < 8; i++) r.read('L', i * 100, 10)
    expect(closed).toHaveLength(1)
    expect(closed[0].ranges).toEqual([[0, 10], [100, 10], [200, 10], [300, 10], [400, 10]])
  })

  it('closes when full (bytes), cutting the last range at the cap', () => {
    const r = recorder({ maxBytes: 250, minRanges: 1 })
    r.read('L', 0, 100)
    r.read('L', 1000, 100)
    r.read('L', 2000, 100)
    expect(closed).toHaveLength(1)
    expect(closed[0].ranges).toEqual([[0, 100], [1000, 100], [2000, 50]])
  })

  it('a window with too few ranges waits for more reads; the next read opens a new window', () => {
    const r = recorder({ windowMs: 1000, minRanges: 3 })
    r.read('L', 0, 10) // a pull: footer and TOC
    r.read('L', 100, 10)
    vi.advanceTimersByTime(5000)
    expect(closed).toHaveLength(0)
    r.read('L', 200, 10) // the container, much later
    vi.advanceTimersByTime(999)
    expect(closed).toHaveLength(0)
    vi.advanceTimersByTime(1)
    expect(closed.map(c => c.ranges)).toEqual([[[0, 10], [100, 10], [200, 10]]])
  })

  it('close() hands on a recording with enough ranges and drops a short one; closeAll() closes every one', () => {
    const r = recorder({ minRanges: 2 })
    r.read('A', 0, 10)
    r.read('A', 20, 10)
    r.read('B', 0, 10)
    r.close('B')
    expect(closed).toHaveLength(0)
    r.read('B', 0, 10) // B dropped, not closed: recorded again
    r.read('C', 5, 5)
    r.read('C', 50, 5)
    r.close('A')
    expect(closed.map(c => c.layer)).toEqual(['A'])
    r.closeAll()
    expect(closed.map(c => c.layer)).toEqual(['A', 'C'])
  })

  it('records at most maxLayers layers at once; ignores empty and bad reads', () => {
    const r = recorder({ maxLayers: 2 })
    r.read('A', 0, 1)
    r.read('B', 0, 1)
    r.read('C', 0, 1)
    r.read('A', 5, 0)
    r.read('A', Number.NaN, 3)
    expect([...r.recording()]).toEqual([['A', 1], ['B', 1]])
    expect(r.dropped).toBe(1)
  })

  it('refuses bad options', () => {
    expect(() => recorder({ windowMs: 0 })).toThrow(InvalidOptionError)
    expect(() => recorder({ maxRanges: 1.5 })).toThrow(InvalidOptionError)
  })
})

describe('record CIDs', () => {
  it('only raw sha2-256 CIDv1 name records', () => {
    expect(isRecordCid(CID.parse(LAYER))).toBe(true)
    expect(isRecordCid(CID.parse('bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi'))).toBe(false) // dag-pb
    expect(isRecordCid(CID.parse('QmPZ9gcCEpqKTo6aq61g2nXGUhM4iCL3ewB6LDXZCtioEB'))).toBe(false) // v0
  })
})
