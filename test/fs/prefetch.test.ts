import { describe, expect, it } from 'vitest'
import { LayerFs } from '../../src/fs/layer.js'
import { silentLogger } from '../../src/logging.js'
import type { RangeSource } from '../../src/source/index.js'
import { fixtureBytes } from '../../scripts/fixtures/tar.js'
import { CountingSource, HangingSource } from './helpers.js'
import { buildBlob, MemorySource } from './unit-helpers.js'

const logger = silentLogger()

/** Holds every read back while `closed`, and lets them all go on `open()`. */
class GatedSource implements RangeSource {
  closed = false
  held = 0
  private readonly waiting: Array<() => void> = []
  constructor (private readonly inner: RangeSource) {}
  async size (): Promise<number> { return await this.inner.size() }
  async read (offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    if (this.closed) {
      this.held++
      await new Promise<void>(resolve => this.waiting.push(resolve))
    }
    return await this.inner.read(offset, length, signal)
  }

  open (): void {
    this.closed = false
    for (const go of this.waiting.splice(0)) go()
  }
}
const entries = [
  { name: 'boot/init', data: fixtureBytes(1, 200_000) },
  { name: 'lib/big', data: fixtureBytes(2, 900_000) },
  { name: 'lib/other', data: fixtureBytes(3, 300_000) }
]

describe('Prefetcher', () => {
  it('fetches the prioritized files at mount, then the rest in the background; reads survive a dead source', async () => {
    const { blob, tocDigest } = await buildBlob(entries, { chunkSize: 65536, prioritizedFiles: ['boot/init'] })
    const hanging = new HangingSource(new MemorySource(blob))
    const counting = new CountingSource(hanging)
    const fs = await LayerFs.open({ source: counting, logger }, { tocDigest, backgroundFetch: false, waitForPrefetchAtMount: true })
    await fs.start()
    const st = fs.stats().prefetch
    expect(st.prioritizedDone).toBe(true)
    expect(st.prioritizedBytes).toBeGreaterThan(0)
    expect(st.complete).toBe(false)
    counting.reset()
    expect(Buffer.from(await fs.read(fs.resolve('/boot/init'), 0, 200_000)).equals(entries[0].data)).toBe(true)
    expect(counting.calls).toBe(0) // already prefetched

    const bg = await LayerFs.open({ source: counting, logger }, { tocDigest, backgroundQuietMs: 0, backgroundStepBytes: 100_000 })
    await bg.start()
    await bg.prefetcher.done()
    expect(bg.stats().prefetch.complete).toBe(true)
    expect(bg.stats().prefetch.fetchedBytes).toBe(bg.stats().prefetch.totalBytes)
    hanging.dead = true
    for (const e of entries) expect(Buffer.from(await bg.read(bg.resolve('/' + e.name), 0, e.data.length)).equals(e.data)).toBe(true)
    await bg.stop()
  })

  it('prefetches a region of many small files with one source read per step, not one per file; records in their order', async () => {
    const small = Array.from({ length: 60 }, (_, i) => ({ name: `lib/py/m${String(i).padStart(2, '0')}.py`, data: fixtureBytes(10 + i, 2_000 + 37 * i) }))
    const { blob, tocDigest } = await buildBlob([...small, { name: 'lib/big', data: fixtureBytes(99, 400_000) }], { chunkSize: 65536, prioritizedFiles: small.map(f => f.name) })
    const counting = new CountingSource(new MemorySource(blob))
    const fs = await LayerFs.open({ source: counting, logger }, { tocDigest, backgroundFetch: false, waitForPrefetchAtMount: true, readWindowBytes: 0, neighbourBytes: 0 })
    counting.reset() // the footer and TOC
    await fs.start()
    expect(fs.stats().prefetch.prioritizedDone).toBe(true)
    expect(counting.calls).toBe(1) // 60 files before the landmark, one step
    counting.reset()
    for (const f of small) expect(Buffer.from(await fs.read(fs.resolve('/' + f.name), 0, f.data.length)).equals(f.data)).toBe(true)
    expect(counting.calls).toBe(0)
    await fs.stop()
    // a record naming the files in another order: each stretch that follows in the blob is one read, in the record's order
    const again = await LayerFs.open({ source: counting, logger }, { tocDigest, backgroundFetch: false, prefetchConcurrency: 1, readWindowBytes: 0, neighbourBytes: 0 })
    const first = (name: string): { offset: number, compressedEnd: number } => (again.estargz.lookup(name)?.chunks ?? [])[0]
    const late = [first('lib/py/m40.py').offset, first('lib/py/m49.py').compressedEnd - first('lib/py/m40.py').offset] as [number, number]
    const early = [first('lib/py/m00.py').offset, first('lib/py/m09.py').compressedEnd - first('lib/py/m00.py').offset] as [number, number]
    counting.reset()
    expect((await again.prefetcher.prefetchRanges([late, early])).chunks).toBe(20)
    expect(counting.ranges.map(([o]) => o)).toEqual([late[0], early[0]])
    await again.stop()
  })

  it('prefetchRanges caches the chunks the ranges touch, in the ranges\' order; reads of them then cost no source read', async () => {
    const { blob, tocDigest } = await buildBlob(entries, { chunkSize: 65536 })
    const counting = new CountingSource(new MemorySource(blob))
    const fs = await LayerFs.open({ source: counting, logger }, { tocDigest, backgroundFetch: false, prefetchConcurrency: 1, readWindowBytes: 0, neighbourBytes: 0 })
    await fs.start()
    const chunksOf = (path: string): Array<{ offset: number, compressedEnd: number }> => fs.estargz.lookup(path)?.chunks ?? []
    const other = chunksOf('lib/other')
    const init = chunksOf('boot/init')
    const big = chunksOf('lib/big')
    // the whole of lib/other, then one byte inside boot/init's second chunk
    const ranges: Array<[number, number]> = [[other[0].offset, other[other.length - 1].compressedEnd - other[0].offset], [init[1].offset + 1, 1]]
    counting.reset()
    const r = await fs.prefetcher.prefetchRanges(ranges)
    expect(r).toEqual({ chunks: other.length + 1, bytes: other.reduce((n, c) => n + c.compressedEnd - c.offset, 0) + init[1].compressedEnd - init[1].offset })
    // lib/other's chunks were read first, boot/init's last; nothing of lib/big
    expect(counting.ranges[0][0]).toBe(other[0].offset)
    expect(counting.ranges.at(-1)?.[0]).toBe(init[1].offset)
    expect(counting.ranges.every(([o]) => o < big[0].offset || o >= big[big.length - 1].compressedEnd)).toBe(true)
    counting.reset()
    expect(Buffer.from(await fs.read(fs.resolve('/lib/other'), 0, 300_000)).equals(entries[2].data)).toBe(true)
    expect(Buffer.from(await fs.read(fs.resolve('/boot/init'), 65536, 65536)).equals(entries[0].data.subarray(65536, 131072))).toBe(true)
    expect(counting.calls).toBe(0)
    // a range outside every chunk touches nothing; a stopped layer ends a prefetch early
    expect(await fs.prefetcher.prefetchRanges([[blob.length - 10, 5]])).toEqual({ chunks: 0, bytes: 0 })
    await fs.stop()
    expect((await fs.prefetcher.prefetchRanges([[big[0].offset, 1]])).error).toMatch(/stopped/)
  })

  it('by default start() does not wait: waitForPrioritized() does, and the background fetch follows the region', async () => {
    const { blob, tocDigest } = await buildBlob(entries, { chunkSize: 65536, prioritizedFiles: ['boot/init'] })
    const gated = new GatedSource(new MemorySource(blob))
    const fs = await LayerFs.open({ source: gated, logger }, { tocDigest, backgroundQuietMs: 0, prefetchTimeoutMs: 10_000 })
    gated.closed = true
    await fs.start() // resolves with every read of the region held back
    expect(gated.held).toBeGreaterThan(0)
    expect(fs.stats().prefetch.prioritizedDone).toBe(false)
    let waited = false
    const waiting = fs.waitForPrefetch().then(() => { waited = true })
    await new Promise(resolve => setTimeout(resolve, 50))
    expect(waited).toBe(false)
    expect(fs.stats().prefetch.fetchedBytes).toBe(0) // the background fetch waits for the region
    gated.open()
    await waiting
    expect(fs.stats().prefetch.prioritizedDone).toBe(true)
    await fs.prefetcher.done()
    expect(fs.stats().prefetch.complete).toBe(true)
    await fs.waitForPrefetch() // at once, once done
    await fs.stop()
  })

  it('does not fail the mount, or the wait, when the prefetch times out', async () => {
    const { blob, tocDigest } = await buildBlob(entries, { chunkSize: 65536, prioritizedFiles: ['boot/init'] })
    const hanging = new HangingSource(new MemorySource(blob), 0, 1 << 30)
    const fs = await LayerFs.open({ source: hanging, logger }, { tocDigest, backgroundFetch: false, prefetchTimeoutMs: 200, fetchTimeoutMs: 400, waitForPrefetchAtMount: true })
    hanging.armed = true
    await fs.start()
    expect(fs.stats().prefetch.prioritizedDone).toBe(false)
    await fs.stop()

    hanging.armed = false
    const later = await LayerFs.open({ source: hanging, logger }, { tocDigest, backgroundFetch: false, prefetchTimeoutMs: 200, fetchTimeoutMs: 10_000 })
    hanging.armed = true
    await later.start()
    const started = Date.now()
    await later.waitForPrefetch()
    expect(Date.now() - started).toBeGreaterThanOrEqual(190)
    expect(later.stats().prefetch.prioritizedDone).toBe(false)
    const again = Date.now()
    await later.waitForPrefetch() // given up once: no second wait
    expect(Date.now() - again).toBeLessThan(150)
    await later.stop()
  })

  it('stop() during the prefetch ends the mount\'s wait at once (a cancelled mount), not at the prefetch timeout', async () => {
    const { blob, tocDigest } = await buildBlob(entries, { chunkSize: 65536, prioritizedFiles: ['boot/init'] })
    const hanging = new HangingSource(new MemorySource(blob), 0, 1 << 30)
    const fs = await LayerFs.open({ source: hanging, logger }, { tocDigest, backgroundFetch: false, prefetchTimeoutMs: 10_000, fetchTimeoutMs: 20_000, waitForPrefetchAtMount: true })
    hanging.armed = true
    const started = Date.now()
    const starting = fs.start()
    await new Promise(resolve => setTimeout(resolve, 100))
    expect(hanging.hung).toBeGreaterThan(0)
    await fs.stop()
    await starting
    expect(Date.now() - started).toBeLessThan(1_000)
    expect(fs.stats().prefetch.prioritizedDone).toBe(false)
  })
})
