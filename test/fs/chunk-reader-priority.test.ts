import { describe, expect, it } from 'vitest'
import { ChunkCache } from '../../src/fs/cache.js'
import { ChunkReader } from '../../src/fs/chunk-reader.js'
import { EstargzReader } from '../../src/estargz/index.js'
import { silentLogger } from '../../src/logging.js'
import { fixtureBytes } from '../../scripts/fixtures/tar.js'
import { buildBlob, MemorySource } from './unit-helpers.js'
import type { RangeSource, ReadHint } from '../../src/source/types.js'

const logger = silentLogger()

describe('ChunkReader read priority', () => {
  it('tells the source which reads are background fetch (ensureCached) and which are on demand', async () => {
    const data = fixtureBytes(3, 6 * 65536)
    const { blob } = await buildBlob([{ name: 'f', data }], { chunkSize: 65536 })
    const base = new MemorySource(blob)
    const hints: boolean[] = []
    const source: RangeSource = {
      size: async () => await base.size(),
      read: async (o: number, l: number, _s?: AbortSignal, hint?: ReadHint) => { hints.push(hint?.background === true); return await base.read(o, l) }
    }
    const es = await EstargzReader.open(async (o, l) => await base.read(o, l), blob.length)
    const node = es.lookup('f')
    if (node == null) throw new Error('missing fixture')
    const reader = new ChunkReader({ source, cache: new ChunkCache({ logger }), logger }, { readWindowBytes: 0 })

    const got = await reader.read(node, 0, 100)
    expect(Buffer.from(got).equals(data.subarray(0, 100))).toBe(true)
    expect(hints).toEqual([false])
    await reader.ensureCached(node, node.chunks.slice(3))
    expect(hints.slice(1).length).toBeGreaterThan(0)
    expect(hints.slice(1).every(b => b)).toBe(true)
  })

  it('an on-demand read of a chunk a background fetch is getting does not wait behind it', async () => {
    const data = fixtureBytes(4, 4 * 65536)
    const { blob } = await buildBlob([{ name: 'f', data }], { chunkSize: 65536 })
    const base = new MemorySource(blob)
    let releaseBackground: () => void = () => {}
    const held = new Promise<void>(resolve => { releaseBackground = resolve })
    const source: RangeSource = {
      size: async () => await base.size(),
      // The source serves background reads last: here, not until the test lets it.
      read: async (o: number, l: number, _s?: AbortSignal, hint?: ReadHint) => {
        if (hint?.background === true) await held
        return await base.read(o, l)
      }
    }
    const es = await EstargzReader.open(async (o, l) => await base.read(o, l), blob.length)
    const node = es.lookup('f')
    if (node == null) throw new Error('missing fixture')
    const reader = new ChunkReader({ source, cache: new ChunkCache({ logger }), logger }, { readWindowBytes: 0 })
    const background = reader.ensureCached(node, node.chunks)
    const got = await Promise.race([
      reader.read(node, 2 * 65536, 100),
      new Promise<'stuck'>(resolve => setTimeout(() => resolve('stuck'), 2000))
    ])
    expect(got).not.toBe('stuck')
    expect(Buffer.from(got as Uint8Array).equals(data.subarray(2 * 65536, 2 * 65536 + 100))).toBe(true)
    releaseBackground()
    await background
  })

  it('an on-demand read of a chunk a prefetch is getting does not wait behind it; a prefetch joins an on-demand fetch', async () => {
    const data = fixtureBytes(5, 4 * 65536)
    const { blob } = await buildBlob([{ name: 'f', data }], { chunkSize: 65536 })
    const base = new MemorySource(blob)
    let releasePrefetch: () => void = () => {}
    const held = new Promise<void>(resolve => { releasePrefetch = resolve })
    const reads: string[] = []
    const source: RangeSource = {
      size: async () => await base.size(),
      // a prefetch's batch of ranges is answered late: here, not until the test lets it
      read: async (o: number, l: number, _s?: AbortSignal, hint?: ReadHint) => {
        reads.push(hint?.prefetch === true ? 'prefetch' : hint?.background === true ? 'background' : 'demand')
        if (hint?.prefetch === true) await held
        return await base.read(o, l)
      }
    }
    const es = await EstargzReader.open(async (o, l) => await base.read(o, l), blob.length)
    const node = es.lookup('f')
    if (node == null) throw new Error('missing fixture')
    const reader = new ChunkReader({ source, cache: new ChunkCache({ logger }), logger }, { readWindowBytes: 0, neighbourBytes: 0 })
    const prefetch = reader.ensureCached(node, node.chunks.slice(0, 2), { prefetch: true })
    const got = await Promise.race([
      reader.read(node, 65536, 100),
      new Promise<'stuck'>(resolve => setTimeout(() => resolve('stuck'), 2000))
    ])
    expect(got).not.toBe('stuck')
    expect(Buffer.from(got as Uint8Array).equals(data.subarray(65536, 65636))).toBe(true)
    // an on-demand fetch of chunk 3 under way: a prefetch of it joins it, no read of its own
    const asked = reads.length
    const demand = reader.read(node, 3 * 65536, 100)
    while (reads.length === asked) await new Promise(resolve => setImmediate(resolve)) // its fetch has started
    const before = reads.length
    await reader.ensureCached(node, node.chunks.slice(3, 4), { prefetch: true })
    expect(reads.length).toBe(before)
    await demand
    releasePrefetch()
    await prefetch
  })
})
