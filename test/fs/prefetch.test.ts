import { describe, expect, it } from 'vitest'
import { LayerFs } from '../../src/fs/layer.js'
import { silentLogger } from '../../src/logging.js'
import { fixtureBytes } from '../../scripts/fixtures/tar.js'
import { CountingSource, HangingSource } from './helpers.js'
import { buildBlob, MemorySource } from './unit-helpers.js'

const logger = silentLogger()
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
    const fs = await LayerFs.open({ source: counting, logger }, { tocDigest, backgroundFetch: false })
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

  it('does not fail the mount when the prefetch times out', async () => {
    const { blob, tocDigest } = await buildBlob(entries, { chunkSize: 65536, prioritizedFiles: ['boot/init'] })
    const hanging = new HangingSource(new MemorySource(blob), 0, 1 << 30)
    const fs = await LayerFs.open({ source: hanging, logger }, { tocDigest, backgroundFetch: false, prefetchTimeoutMs: 200, fetchTimeoutMs: 400 })
    hanging.armed = true
    await fs.start()
    expect(fs.stats().prefetch.prioritizedDone).toBe(false)
    await fs.stop()
  })

  it('stop() during the prefetch ends the mount\'s wait at once (a cancelled mount), not at the prefetch timeout', async () => {
    const { blob, tocDigest } = await buildBlob(entries, { chunkSize: 65536, prioritizedFiles: ['boot/init'] })
    const hanging = new HangingSource(new MemorySource(blob), 0, 1 << 30)
    const fs = await LayerFs.open({ source: hanging, logger }, { tocDigest, backgroundFetch: false, prefetchTimeoutMs: 10_000, fetchTimeoutMs: 20_000 })
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
