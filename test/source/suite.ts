/**
 * The shared RangeSource test suite: every implementation runs it.
 *
 *   import { rangeSourceSuite } from './suite.js'
 *   rangeSourceSuite('FileSource', async (data) => {
 *     // store `data` wherever the source reads from, open the source on it
 *     return { source, cleanup: async () => { ... } }
 *   })
 *
 * `makeSource(data)` is called once per suite (in beforeAll) with random bytes (a bit over
 * 3 MiB by default, so it spans several 1 MiB and 256 KiB blocks); `cleanup` runs in afterAll
 * (call `source.close()` there if needed). Options: `size` (bytes of data), `boundaries`
 * (extra offsets where the source has internal block/leaf edges, to read across).
 *
 * It checks: whole read equals the bytes; ranges at the edges (first byte, last byte, across
 * block boundaries); a background hint; zero length; offset == size and past the end (empty); length past the end
 * (short); many parallel random reads; abort (already-aborted signal, abort mid-read → rejects
 * with an error named AbortError, and the source still works afterwards).
 */
import { randomBytes, randomInt } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { RangeSource } from '../../src/source/types.js'

export interface SourceFixture {
  source: RangeSource
  cleanup: () => Promise<void>
}

export interface SuiteOptions {
  /** Bytes of test data. Default 3 MiB + 12345. */
  size?: number
  /** Offsets of internal block edges to read across. Default: every 256 KiB. */
  boundaries?: number[]
}

export function rangeSourceSuite (name: string, makeSource: (data: Uint8Array) => Promise<SourceFixture>, options: SuiteOptions = {}): void {
  describe(`RangeSource suite: ${name}`, () => {
    const size = options.size ?? (3 << 20) + 12345
    const data = randomBytes(size)
    let fixture: SourceFixture | undefined
    const src = (): RangeSource => {
      if (fixture == null) throw new Error('makeSource failed')
      return fixture.source
    }
    const expectRange = async (offset: number, length: number): Promise<void> => {
      const got = await src().read(offset, length)
      const want = data.subarray(Math.min(offset, size), Math.min(size, offset + length))
      expect(got.length).toBe(want.length)
      expect(Buffer.compare(Buffer.from(got.buffer, got.byteOffset, got.byteLength), want)).toBe(0)
    }

    beforeAll(async () => { fixture = await makeSource(data) })
    afterAll(async () => { await fixture?.cleanup() })

    it('reports the size', async () => {
      expect(await src().size()).toBe(size)
    })

    it('reads the whole blob', async () => {
      await expectRange(0, size)
    })

    it('reads the same bytes with a background hint (a source may ignore it)', async () => {
      const at = Math.floor(size / 3)
      const got = await src().read(at, 100_000, undefined, { background: true })
      expect(Buffer.compare(Buffer.from(got), data.subarray(at, at + 100_000))).toBe(0)
    })

    it('reads the first and the last byte', async () => {
      await expectRange(0, 1)
      await expectRange(size - 1, 1)
    })

    it('reads across internal boundaries', async () => {
      const edges = options.boundaries ?? Array.from({ length: Math.floor(size / (256 << 10)) }, (_, i) => (i + 1) * (256 << 10))
      for (const b of edges.filter(e => e > 0 && e < size)) {
        await expectRange(b - 1, 2)
        await expectRange(b - 1000, 3000)
        await expectRange(b, 1)
      }
      await expectRange(1, (1 << 20) + 2) // spans a 1 MiB block plus a byte on each side
    })

    it('returns an empty array for a zero length', async () => {
      expect((await src().read(0, 0)).length).toBe(0)
      expect((await src().read(12345, 0)).length).toBe(0)
    })

    it('returns an empty array at and past the end', async () => {
      expect((await src().read(size, 10)).length).toBe(0)
      expect((await src().read(size + 1000, 10)).length).toBe(0)
    })

    it('returns a short read for a length past the end', async () => {
      await expectRange(size - 100, 1000)
    })

    it('serves many parallel random reads correctly', async () => {
      const reads = Array.from({ length: 64 }, () => {
        const offset = randomInt(0, size)
        const length = randomInt(0, 300_000)
        return expectRange(offset, length)
      })
      await Promise.all(reads)
    })

    it('rejects with AbortError on an already aborted signal', async () => {
      const ac = new AbortController()
      ac.abort()
      await expect(src().read(0, 100, ac.signal)).rejects.toMatchObject({ name: 'AbortError' })
    })

    it('rejects with AbortError when aborted mid-read, and keeps working', async () => {
      const ac = new AbortController()
      const p = src().read(100, size - 200, ac.signal)
      ac.abort()
      await expect(p).rejects.toMatchObject({ name: 'AbortError' })
      await expectRange(100, 5000)
    })
  })
}
