import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { FileSource } from '../../src/source/file.js'
import { ReadaheadSource } from '../../src/source/readahead.js'
import type { RangeSource } from '../../src/source/types.js'
import { rangeSourceSuite } from './suite.js'

rangeSourceSuite('ReadaheadSource over FileSource', async (data) => {
  const dir = await mkdtemp(join(tmpdir(), 'readahead-source-'))
  await writeFile(join(dir, 'blob'), data)
  const source = new ReadaheadSource(await FileSource.open(join(dir, 'blob')), { windowBytes: 300_000, maxWindows: 4 })
  return { source, cleanup: async () => { await source.close(); await rm(dir, { recursive: true, force: true }) } }
})

describe('ReadaheadSource', () => {
  it('serves small reads next to each other with one fetch of the source', async () => {
    const data = Buffer.alloc(1 << 20, 7).map((_, i) => i % 251)
    const reads: Array<[number, number]> = []
    const inner: RangeSource = {
      size: async () => data.length,
      read: async (o, l) => { reads.push([o, l]); return data.subarray(o, Math.min(data.length, o + l)) }
    }
    const ra = new ReadaheadSource(inner, { windowBytes: 64 << 10 })
    const got = await Promise.all([[0, 100], [100, 4000], [5000, 10], [60_000, 5536]].map(async ([o, l]) => await ra.read(o, l)))
    expect(got.map(b => b.length)).toEqual([100, 4000, 10, 5536])
    expect(Buffer.from(got[3]).equals(Buffer.from(data.subarray(60_000, 65_536)))).toBe(true)
    expect(reads.length).toBeLessThanOrEqual(2) // the first read's window, maybe one racing it
    reads.length = 0
    await ra.read(70_000, 10)
    expect(reads).toEqual([[70_000, 64 << 10]])
    await ra.read(0, 1 << 20) // large reads pass through untouched
    expect(reads.at(-1)).toEqual([0, 1 << 20])
  })
})
