import * as dagPb from '@ipld/dag-pb'
import { afterAll, describe, expect, it } from 'vitest'
import { buildEstargz, EstargzReader } from '../../src/estargz/index.js'
import { collectBlock } from '../../src/ipfs/dag-reader.js'
import { importBytes, importSegments } from '../../src/ipfs/import.js'
import { IpfsSource } from '../../src/source/ipfs.js'
import type { ReadHint } from '../../src/source/types.js'
import { TempRepos, random, streamOf } from '../ipfs/helpers.js'
import { makeTar } from '../../scripts/fixtures/tar.js'
import { rangeSourceSuite } from './suite.js'
import type { CID } from 'multiformats/cid'

const repos = new TempRepos()
afterAll(async () => { await repos.cleanup() })

const MiB = 1 << 20

rangeSourceSuite('IpfsSource (local blockstore, 1 MiB leaves)', async (data) => {
  const node = await repos.node()
  const { cid } = await importBytes(node.helia.blockstore, data)
  const source = await IpfsSource.open(node.blocks, cid)
  return { source, cleanup: async () => { await source.close() } }
}, { boundaries: [MiB, 2 * MiB, 3 * MiB] })

rangeSourceSuite('IpfsSource (local blockstore, kubo-compatible 256 KiB leaves)', async (data) => {
  const node = await repos.node()
  const { cid } = await importBytes(node.helia.blockstore, data, { kuboCompatible: true })
  const source = await IpfsSource.open(node.blocks, cid)
  return { source, cleanup: async () => { await source.close() } }
})

rangeSourceSuite('IpfsSource (remote: blocks on another node, bitswap over loopback TCP)', async (data) => {
  const a = await repos.node({ listen: ['/ip4/127.0.0.1/tcp/0'] })
  const b = await repos.node()
  const { cid } = await importBytes(a.helia.blockstore, data)
  await b.dial(a.multiaddrs()[0])
  const source = await IpfsSource.open(b.blocks, cid)
  return { source, cleanup: async () => { await source.close() } }
}, { boundaries: [MiB, 2 * MiB, 3 * MiB] })

/** Multihashes (hex) of every block in a node's local blockstore (it keys by multihash). */
async function localBlocks (node: Awaited<ReturnType<TempRepos['node']>>): Promise<Set<string>> {
  const out = new Set<string>()
  for await (const { cid } of node.localBlockstore.getAll()) out.add(mh(cid))
  return out
}
const mh = (cid: CID): string => Buffer.from(cid.multihash.bytes).toString('hex')

describe('IpfsSource over the network', () => {
  it('fetches the root\'s interior nodes at open, so a first read under any of them costs one block', async () => {
    const a = await repos.node({ listen: ['/ip4/127.0.0.1/tcp/0'] })
    const b = await repos.node()
    // 2500 members of 100 bytes: 2500 leaves, so the root links 3 interior nodes of ≤ 1024 leaves.
    const members = Array.from({ length: 2500 }, () => random(100))
    const { cid } = await importSegments(a.localBlockstore, async (sink) => {
      let offset = 0
      for (const bytes of members) { await sink({ kind: 'data', offset, bytes }); offset += bytes.length }
    }, { smallMemberLeafBytes: 0 }) // one leaf per member
    const root = dagPb.decode(await collectBlock(a.localBlockstore.get(cid)))
    expect(root.Links.length).toBe(3)
    await b.dial(a.multiaddrs()[0])
    const fetched = new Set<string>()
    const source = await IpfsSource.open(b.blocks, cid, { onBlock: (f) => { if (f.network) fetched.add(f.cid.toString()) } })
    for (let i = 0; i < 200 && fetched.size < 4; i++) await new Promise(resolve => setTimeout(resolve, 10))
    expect([...fetched].sort()).toEqual([cid, ...root.Links.map(l => l.Hash)].map(String).sort())
    const before = fetched.size
    const at = 2100 * 100
    expect(Buffer.from(await source.read(at, 100)).equals(members[2100])).toBe(true)
    expect(fetched.size - before, 'one leaf, its interior node already there').toBe(1)
  })

  it('fetches only the blocks a range needs from the peer', async () => {
    const a = await repos.node({ listen: ['/ip4/127.0.0.1/tcp/0'] })
    const b = await repos.node()
    const data = random(5 * MiB + 777)
    const { cid } = await importBytes(a.helia.blockstore, data)
    const root = dagPb.decode(await collectBlock(a.localBlockstore.get(cid)))
    const leaves: CID[] = root.Links.map(l => l.Hash)
    expect(leaves.length).toBe(6)

    await b.dial(a.multiaddrs()[0])
    const fetched: string[] = []
    const source = await IpfsSource.open(b.blocks, cid, { onBlock: (f) => { if (f.network) fetched.push(f.cid.toString()) } })
    expect(await source.size()).toBe(data.length)
    expect(fetched).toEqual([cid.toString()]) // size() needs the root only

    // 64 KiB inside leaf 2, then a range straddling leaves 3 and 4
    const r1 = await source.read(2 * MiB + 1000, 65536)
    expect(Buffer.compare(Buffer.from(r1), data.subarray(2 * MiB + 1000, 2 * MiB + 1000 + 65536))).toBe(0)
    const r2 = await source.read(4 * MiB - 10, 20)
    expect(Buffer.compare(Buffer.from(r2), data.subarray(4 * MiB - 10, 4 * MiB + 10))).toBe(0)

    const want = [cid, leaves[2], leaves[3], leaves[4]].map(String)
    expect(fetched.sort()).toEqual([...want].sort())
    await b.flush() // fetched blocks are written behind the reads
    expect(await localBlocks(b)).toEqual(new Set([cid, leaves[2], leaves[3], leaves[4]].map(mh)))
    const stats = source.stats()
    expect(stats.networkBlocks).toBe(4)
    expect(stats.networkBytes).toBe(3 * MiB + (await collectBlock(a.localBlockstore.get(cid))).length)

    // the same range again is served locally
    await source.read(2 * MiB + 1000, 65536)
    expect(source.stats().networkBlocks).toBe(4)
    expect(source.stats().localBlocks).toBe(1)
  })

  it('fails with ReadTimeoutError when no peer has the blocks', async () => {
    const a = await repos.node()
    const b = await repos.node()
    const { cid } = await importBytes(a.helia.blockstore, random(3 * MiB))
    // b has the root only (copied by hand) and no connection to a
    await b.localBlockstore.put(cid, await collectBlock(a.localBlockstore.get(cid)))
    const source = await IpfsSource.open(b.blocks, cid, { readTimeout: 500 })
    await expect(source.read(MiB, 10)).rejects.toMatchObject({ code: 'ERR_READ_TIMEOUT', name: 'ReadTimeoutError' })
  })

  it('fails offline when a block is missing locally', async () => {
    const a = await repos.node()
    const b = await repos.node()
    const { cid } = await importBytes(a.helia.blockstore, random(2 * MiB))
    await b.localBlockstore.put(cid, await collectBlock(a.localBlockstore.get(cid)))
    const source = await IpfsSource.open(b.blocks, cid, { offline: true })
    await expect(source.read(0, 10)).rejects.toThrow()
  })
})

describe('IpfsSource with the block exchange', () => {
  const identified = async (b: Awaited<ReturnType<TempRepos['node']>>): Promise<void> => {
    for (let i = 0; i < 500 && b.exchange.peers().length === 0; i++) await new Promise(resolve => setTimeout(resolve, 10))
  }

  it('reads a layer on another node through the exchange (a stage of helia.blockstore), no bitswap, blocks counted as network', async () => {
    const a = await repos.node({ listen: ['/ip4/127.0.0.1/tcp/0'] })
    const b = await repos.node()
    const files = Array.from({ length: 4 }, (_, i) => ({ name: `f-${i}.bin`, data: random(1_200_000 + i * 1000) }))
    const layer = await importSegments(a.localBlockstore, async (sink) => await buildEstargz(streamOf(makeTar(files)), sink))
    await b.dial(a.multiaddrs()[0])
    await identified(b)

    const source = await IpfsSource.open(b.blocks, layer.cid)
    const reader = await EstargzReader.open(async (o, l, s) => await source.read(o, l, s), await source.size(), { tocDigest: layer.produced.tocDigest })
    const got = await reader.readFile('f-2.bin')
    expect(Buffer.compare(Buffer.from(got), files[2].data)).toBe(0)

    const stats = source.stats()
    const ex = b.exchange.stats()
    expect(stats.networkBlocks).toBeGreaterThan(2)
    // every network block came through the exchange: none through bitswap
    expect(ex.blocksReceived).toBe(stats.networkBlocks)
    expect(ex.bytesReceived).toBe(stats.networkBytes)
    expect(ex.requests).toBeLessThanOrEqual(stats.networkBlocks)
    expect(b.fetchStats()).toMatchObject({ exchangeBlocks: stats.networkBlocks, exchangeBytes: stats.networkBytes, bitswapBlocks: 0 })

    // read again: local now
    await reader.readFile('f-2.bin')
    expect(source.stats().networkBlocks).toBe(stats.networkBlocks)
    expect(b.exchange.stats().requests).toBe(ex.requests)
  })

  it('a pushed layer\'s small file comes from a peer in one block, and its tar-order neighbours with it', async () => {
    const a = await repos.node({ listen: ['/ip4/127.0.0.1/tcp/0'] })
    const b = await repos.node()
    // a package directory of small files (incompressible: each ~2 KB member), then a big file
    const small = Array.from({ length: 40 }, (_, i) => ({ name: `lib/pkg/m${String(i).padStart(2, '0')}.py`, data: random(1500 + 25 * i) }))
    const layer = await importSegments(a.localBlockstore, async (sink) => await buildEstargz(streamOf(makeTar([...small, { name: 'lib/big.so', data: random(300_000) }])), sink))
    await b.dial(a.multiaddrs()[0])
    await identified(b)
    const source = await IpfsSource.open(b.blocks, layer.cid)
    const reader = await EstargzReader.open(async (o, l, s) => await source.read(o, l, s), await source.size(), { tocDigest: layer.produced.tocDigest })
    const perFile: number[] = []
    for (const f of small) {
      const before = source.stats().networkBlocks
      expect(Buffer.compare(Buffer.from(await reader.readFile(f.name)), f.data)).toBe(0)
      perFile.push(source.stats().networkBlocks - before)
    }
    // one leaf per member made every read two blocks (the file's data, the next tar header)
    expect(Math.max(...perFile)).toBe(1)
    // ~16 KiB leaves of ~2 KB files: most reads find their leaf already fetched by a neighbour's
    const bytes = small.reduce((n, f) => n + f.data.length, 0)
    expect(perFile.filter(n => n === 1).length).toBeLessThanOrEqual(Math.ceil(bytes / (16 << 10)) + 2)
    expect(b.fetchStats().bitswapBlocks).toBe(0)
    await source.close()
  })

  it('asks the exchange at each read\'s priority: a prefetch read as prefetch, a background one as background, others on demand', async () => {
    const a = await repos.node({ listen: ['/ip4/127.0.0.1/tcp/0'] })
    const b = await repos.node()
    const data = random(3 * MiB + 100) // 4 leaves under the root
    const { cid } = await importBytes(a.localBlockstore, data)
    await b.dial(a.multiaddrs()[0])
    await identified(b)
    const source = await IpfsSource.open(b.blocks, cid, { prefetchInterior: false })
    expect(b.exchange.stats()).toMatchObject({ requests: 1, prefetchRequests: 0, backgroundRequests: 0 }) // the root, on demand

    const read = async (offset: number, hint?: ReadHint): Promise<void> => {
      const r = await source.read(offset, 100, undefined, hint)
      expect(Buffer.compare(Buffer.from(r), data.subarray(offset, offset + 100))).toBe(0)
    }
    await read(5, { prefetch: true })
    expect(b.exchange.stats()).toMatchObject({ requests: 2, prefetchRequests: 1, backgroundRequests: 0 })
    await read(MiB + 5, { background: true })
    expect(b.exchange.stats()).toMatchObject({ requests: 3, prefetchRequests: 1, backgroundRequests: 1 })
    await read(2 * MiB + 5)
    expect(b.exchange.stats()).toMatchObject({ requests: 4, prefetchRequests: 1, backgroundRequests: 1 })
  })

  it('falls back to bitswap when no exchange peer has the block, and stays offline when told', async () => {
    const a = await repos.node({ listen: ['/ip4/127.0.0.1/tcp/0'] })
    const b = await repos.node()
    const data = random(2 * MiB + 10)
    const { cid } = await importBytes(a.localBlockstore, data)
    await b.dial(a.multiaddrs()[0])
    await identified(b)
    await a.exchange.stop() // a still speaks bitswap

    const offline = await IpfsSource.open(b.blocks, cid, { offline: true, readTimeout: 2000 }).catch((err: Error) => err)
    expect(offline).toBeInstanceOf(Error)
    expect(b.exchange.stats().requests).toBe(0)

    const source = await IpfsSource.open(b.blocks, cid)
    const r = await source.read(MiB + 5, 100)
    expect(Buffer.compare(Buffer.from(r), data.subarray(MiB + 5, MiB + 105))).toBe(0)
    expect(source.stats().networkBlocks).toBe(2)
    expect(b.exchange.stats().blocksReceived).toBe(0)
    expect(b.fetchStats()).toMatchObject({ exchangeBlocks: 0, bitswapBlocks: 2 })
  })

  it('an on-demand read completes while a large background read of the same file is under way', async () => {
    const a = await repos.node({ listen: ['/ip4/127.0.0.1/tcp/0'] })
    const b = await repos.node()
    const data = random(48 * MiB)
    const { cid } = await importBytes(a.localBlockstore, data)
    await b.dial(a.multiaddrs()[0])
    await identified(b)
    const source = await IpfsSource.open(b.blocks, cid)

    let backgroundDone = false
    const background = source.read(0, 40 * MiB, undefined, { background: true }).then((bytes) => { backgroundDone = true; return bytes })
    await new Promise(resolve => setTimeout(resolve, 20))
    const received = b.exchange.stats().blocksReceived
    const t0 = Date.now()
    const r = await source.read(44 * MiB + 100, 4096)
    const took = Date.now() - t0
    expect(Buffer.compare(Buffer.from(r), data.subarray(44 * MiB + 100, 44 * MiB + 4196))).toBe(0)
    expect(backgroundDone).toBe(false)
    // it waited for at most the background request on the wire (≤ 4 leaves), not the 40 MiB
    expect(b.exchange.stats().blocksReceived - received).toBeLessThanOrEqual(1 + 8)
    expect(took).toBeLessThan(5000)
    const all = await background
    expect(Buffer.compare(Buffer.from(all), data.subarray(0, 40 * MiB))).toBe(0)
    expect(b.exchange.stats().backgroundRequests).toBeGreaterThanOrEqual(10)
  })
})

describe('IpfsSource under an eStargz reader (member-aligned layer on another node)', () => {
  it('opening the layer and reading one file fetches only the tail and that file\'s leaves', async () => {
    const a = await repos.node({ listen: ['/ip4/127.0.0.1/tcp/0'] })
    const b = await repos.node()
    const files = Array.from({ length: 6 }, (_, i) => ({ name: `dir/file-${i}.bin`, data: random(1_500_000 + i * 1000) }))
    const tar = makeTar(files)
    const layer = await importSegments(a.helia.blockstore, async (sink) => await buildEstargz(streamOf(tar), sink))
    await b.dial(a.multiaddrs()[0])

    const source = await IpfsSource.open(b.blocks, layer.cid)
    const reader = await EstargzReader.open(async (o, l, s) => await source.read(o, l, s), await source.size(), { tocDigest: layer.produced.tocDigest })
    const afterOpen = source.stats().networkBytes
    // footer + TOC leaves + the root: a small fraction of the layer
    expect(afterOpen).toBeLessThan(layer.size * 0.05)

    const got = await reader.readFile('dir/file-3.bin')
    expect(Buffer.compare(Buffer.from(got), files[3].data)).toBe(0)
    const forFile = source.stats().networkBytes - afterOpen
    // exactly the file's compressed member(s): no neighbouring bytes
    const node = reader.lookup('dir/file-3.bin')
    const compressed = (node?.chunks ?? []).reduce((n, c) => n + (c.compressedEnd - c.offset), 0)
    expect(forFile).toBe(compressed)
  })
})
