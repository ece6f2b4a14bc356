import { describe, expect, it } from 'vitest'
import { ChunkCache } from '../../src/fs/cache.js'
import { ChunkReader, chunksInBlobOrder } from '../../src/fs/chunk-reader.js'
import { ChunkVerificationError, FetchTimeoutError } from '../../src/fs/errors.js'
import { EstargzReader, type Chunk, type LayerNode } from '../../src/estargz/index.js'
import { silentLogger } from '../../src/logging.js'
import { fixtureBytes } from '../../scripts/fixtures/tar.js'
import { CorruptingSource, CountingSource, HangingSource } from './helpers.js'
import { buildBlob, MemorySource } from './unit-helpers.js'
import type { RangeSource } from '../../src/source/types.js'

const logger = silentLogger()
const data = fixtureBytes(9, 10 * 65536 + 7)

async function setup (wrap: (s: RangeSource) => RangeSource = s => s, fetchTimeoutMs?: number): Promise<{ reader: ChunkReader, node: NonNullable<ReturnType<EstargzReader['lookup']>>, other: NonNullable<ReturnType<EstargzReader['lookup']>> }> {
  const { blob } = await buildBlob([{ name: 'f', data }, { name: 'g', data: 'other file' }], { chunkSize: 65536 })
  const base = new MemorySource(blob)
  const es = await EstargzReader.open(async (o, l) => await base.read(o, l), blob.length)
  const reader = new ChunkReader({ source: wrap(base), cache: new ChunkCache({ logger }), logger }, { fetchTimeoutMs })
  const node = es.lookup('f')
  const other = es.lookup('g')
  if (node == null || other == null) throw new Error('missing fixture')
  return { reader, node, other }
}

describe('ChunkReader', () => {
  it('counts the bytes fetched by who wanted them, the bytes the cache answered, and each source read\'s latency', async () => {
    const cache = new ChunkCache({ logger })
    const { blob } = await buildBlob([{ name: 'f', data }], { chunkSize: 65536 })
    const source = new MemorySource(blob)
    const es = await EstargzReader.open(async (o, l) => await source.read(o, l), blob.length)
    const node = es.lookup('f') as NonNullable<ReturnType<EstargzReader['lookup']>>
    const reader = new ChunkReader({ source, cache, logger }, { readWindowBytes: 0 })
    expect(Buffer.from(await reader.read(node, 0, 65536)).equals(data.subarray(0, 65536))).toBe(true)
    await reader.ensureCached(node, [node.chunks[1]], { prefetch: true })
    await reader.ensureCached(node, [node.chunks[2]])
    const s = reader.stats()
    expect(s.fetchedBytes.demand).toBeGreaterThan(0)
    expect(s.fetchedBytes.prefetch).toBeGreaterThan(0)
    expect(s.fetchedBytes.background).toBeGreaterThan(0)
    expect(s.fetchedBytes.demand + s.fetchedBytes.prefetch + s.fetchedBytes.background).toBe(s.bytesFetched)
    expect(s.fetchMs.count).toBe(s.fetches)
    expect(s.fetchMs.counts.reduce((a, b) => a + b, 0)).toBe(s.fetches)
    expect(s.fetchMs.boundsMs[0]).toBe(1)
    expect(s.cacheHitBytes).toBe(0)
    // the prefetched chunk is answered by the cache: its bytes count as hits, nothing is fetched
    expect(Buffer.from(await reader.read(node, 65536 + 10, 1000)).equals(data.subarray(65546, 66546))).toBe(true)
    expect(reader.stats()).toMatchObject({ cacheHitBytes: 1000, bytesFetched: s.bytesFetched })
    expect(cache.stats()).toMatchObject({ hits: 1, hitBytes: 1000, misses: 1 })
  })

  it('a read that misses brings the next chunks in blob order, up to neighbourBytes, in a source read beside its own', async () => {
    const files = Array.from({ length: 40 }, (_, i) => ({ name: `d/f${String(i).padStart(2, '0')}`, data: fixtureBytes(100 + i, 1500 + 37 * i) }))
    const { blob } = await buildBlob(files)
    const counting = new CountingSource(new MemorySource(blob))
    const es = await EstargzReader.open(async (o, l) => await counting.read(o, l), blob.length)
    counting.reset()
    const layout = chunksInBlobOrder(new Set(es.tree.byName.values()))
    const nodes = files.map(f => es.lookup(f.name) as NonNullable<ReturnType<EstargzReader['lookup']>>)
    const reader = new ChunkReader({ source: counting, cache: new ChunkCache({ logger }), logger, layout }, { neighbourBytes: 16 << 10 })
    const first = await reader.read(nodes[0], 0, 1 << 20)
    expect(Buffer.from(first).equals(files[0].data)).toBe(true)
    expect(counting.calls, 'its own read, and one for its neighbours').toBe(2)
    // The neighbours that fit the budget are cached by that one read.
    let covered = 0
    let budget = 16 << 10
    for (const it of layout.slice(layout.findIndex(it => it.node === nodes[0]) + 1)) {
      budget -= it.chunk.compressedEnd - it.chunk.offset
      if (budget < 0) break
      covered++
    }
    expect(covered).toBeGreaterThan(3)
    for (let i = 1; i <= covered; i++) expect(Buffer.from(await reader.read(nodes[i], 0, 1 << 20)).equals(files[i].data), files[i].name).toBe(true)
    expect(counting.calls, 'the neighbours came with the first read').toBe(2)
    expect(Buffer.from(await reader.read(nodes[covered + 1], 0, 1 << 20)).equals(files[covered + 1].data)).toBe(true)
    expect(counting.calls, 'the next file beyond the budget costs a read of its own (and its neighbours one)').toBe(4)
    // Each of the two source reads: its own chunk plus at most the neighbour budget.
    const largest = Math.max(...layout.map(it => it.chunk.compressedEnd - it.chunk.offset))
    expect(counting.bytes).toBeLessThanOrEqual(2 * ((16 << 10) + largest))
  })

  it('coalesces adjacent chunks of one read into one source read, and serves repeats from cache', async () => {
    let counting: CountingSource | undefined
    const { reader, node } = await setup(s => (counting = new CountingSource(s)))
    const out = await reader.read(node, 1000, 5 * 65536)
    expect(Buffer.from(out).equals(data.subarray(1000, 1000 + 5 * 65536))).toBe(true)
    expect(counting?.calls).toBe(1)
    await reader.read(node, 70000, 1000)
    expect(counting?.calls).toBe(1)
    expect(reader.stats().cacheHits).toBe(1)
    expect(reader.stats().bytesServed).toBe(5 * 65536 + 1000)
  })

  it('shares one fetch between concurrent readers of a chunk', async () => {
    let counting: CountingSource | undefined
    const { reader, node } = await setup(s => (counting = new CountingSource(s)))
    const reads = await Promise.all(Array.from({ length: 8 }, async (_, i) => await reader.read(node, 3 * 65536 + i * 100, 50)))
    reads.forEach((r, i) => expect(Buffer.from(r).equals(data.subarray(3 * 65536 + i * 100, 3 * 65536 + i * 100 + 50))).toBe(true))
    expect(counting?.calls).toBe(1)
  })

  it('refuses a corrupted chunk (never returned, never cached) and counts it', async () => {
    let bad: CorruptingSource | undefined
    const { reader, node } = await setup(s => (bad = new CorruptingSource(s, node0Offset, node0Offset + 64)))
    const badSource = bad as CorruptingSource
    badSource.armed = true
    await expect(reader.read(node, 0, 100)).rejects.toBeInstanceOf(ChunkVerificationError)
    expect(reader.stats().verificationFailures).toBe(1)
    badSource.armed = false
    expect(Buffer.from(await reader.read(node, 0, 100)).equals(data.subarray(0, 100))).toBe(true)
  })

  it('fails a read whose source hangs after the fetch timeout; other data still reads', async () => {
    let hang: HangingSource | undefined
    const { reader, node, other } = await setup(s => (hang = new HangingSource(s, node0Offset, node0Offset + 1)), 300)
    const h = hang as HangingSource
    h.armed = true
    await expect(reader.read(node, 0, 10)).rejects.toBeInstanceOf(FetchTimeoutError)
    expect(Buffer.from(await reader.read(other, 0, 100)).toString()).toBe('other file')
    expect(reader.stats().fetchTimeouts).toBe(1)
  })
})

/** The first data member starts right after the first tar header member; chunk 0 of f is there. */
let node0Offset = 0
const probe = await buildBlob([{ name: 'f', data }, { name: 'g', data: 'other file' }], { chunkSize: 65536 })
node0Offset = (await EstargzReader.open(async (o, l) => probe.blob.subarray(o, o + l), probe.blob.length)).lookup('f')?.chunks[0].offset ?? 0

describe('chunksInBlobOrder', () => {
  it('lists every chunk of the regular files once, by blob offset then offset inside the member; a member listed twice keeps its first file', () => {
    const chunk = (offset: number, innerOffset: number): Chunk => ({ chunkOffset: 0, chunkSize: 1, offset, innerOffset, compressedEnd: offset + 10, digest: `sha256:${String(offset)}` })
    const node = (name: string, type: LayerNode['type'], chunks: Chunk[]): LayerNode => ({
      name, type, mode: 0, uid: 0, gid: 0, userName: '', groupName: '', size: chunks.length, mtime: 0, linkName: '', devMajor: 0, devMinor: 0, xattrs: new Map(), chunks, numLink: 1, index: 0
    })
    const a = node('a', 'reg', [chunk(300, 0), chunk(100, 5)])
    const b = node('b', 'reg', [chunk(100, 0), chunk(100, 5), chunk(200, 0)])
    const d = node('d', 'dir', [chunk(50, 0)])
    expect(chunksInBlobOrder([a, d, b]).map(it => [it.node.name, it.chunk.offset, it.chunk.innerOffset])).toEqual([
      ['b', 100, 0], ['a', 100, 5], ['b', 200, 0], ['a', 300, 0]
    ])
  })
})
