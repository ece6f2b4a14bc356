import { createServer, type Server } from 'node:http'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { withBitswap } from '@helia/bitswap'
import { withLibp2pLight } from '@helia/libp2p'
import { identify } from '@libp2p/identify'
import { noise } from '@libp2p/noise'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { createHeliaLight, type Helia } from 'helia'
import { CID } from 'multiformats/cid'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { convertImage } from '../../src/convert/index.js'
import { IpfsPublisher } from '../../src/convert/ipfs-publisher.js'
import { EstargzReader, TOC_DIGEST_ANNOTATION } from '../../src/estargz/index.js'
import { IpfsImageReader } from '../../src/ipfs/image-reader.js'
import { IndexStore, collectBlock, createNode, importBytes, type BlockFetchPath, type IpfsNode, type NodeOptions } from '../../src/ipfs/index.js'
import { PROTOCOL } from '../../src/ipfs/block-exchange.js'
import { silentLogger } from '../../src/logging.js'
import { openOciLayout, parseManifest, type Descriptor } from '../../src/oci/index.js'
import { IpfsSource } from '../../src/source/ipfs.js'
import { allBlobs, makeImage, tagged, writeLayout } from '../../scripts/fixtures/oci-image.js'
import { TempRepos, random, until } from './helpers.js'

const logger = silentLogger()
const repos = new TempRepos()
const stops: Array<() => Promise<void>> = []
const releases: Array<() => void> = []
let dir: string
const LISTEN = ['/ip4/127.0.0.1/tcp/0']
const MiB = 1 << 20

beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'fetch-path-')) })
afterAll(async () => {
  for (const r of releases) r()
  for (const s of stops.reverse()) await s().catch(() => {})
  await repos.cleanup()
  await rm(dir, { recursive: true, force: true })
})

async function node (opts: Partial<NodeOptions> = {}): Promise<IpfsNode> {
  const n = await createNode({ repo: await repos.dir(), logger, ...opts })
  stops.push(async () => { await n.stop() })
  return n
}

async function connect (from: IpfsNode, to: IpfsNode): Promise<void> {
  await from.dial(to.multiaddrs()[0])
  await until(() => from.exchange.peers().some(p => p.equals(to.peerId)), 'identify')
}

/** A stock Helia node: bitswap only, memory stores, none of our protocols. */
async function plainHelia (listen: string[] = []): Promise<Helia & { libp2p: { dial: (a: unknown) => Promise<unknown>, getMultiaddrs: () => unknown[] } }> {
  const h = withBitswap(withLibp2pLight(createHeliaLight(), {
    addresses: { listen },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify() }
  }))
  await h.start()
  stops.push(async () => { await h.stop() })
  return h as never
}

/** Pushes a small eStargz image (2 layers, a file bigger than a leaf) to `on`; its root CID. */
async function pushImage (on: IpfsNode): Promise<string> {
  const img = makeImage({ layerCount: 2, layerSize: 3 * MiB + 1234, seed: randomBytes(4).toString('hex') })
  const src = join(dir, `src-${randomBytes(4).toString('hex')}`)
  await writeLayout(src, allBlobs(img), [tagged(img.manifest.descriptor, 'latest')])
  const index = IndexStore.open(on.repo, { pins: on.helia.pins, localBlockstore: on.localBlockstore, logger })
  stops.push(async () => { index.close() })
  const ipfs = new IpfsPublisher(on, index)
  const source = await openOciLayout(src)
  try {
    await convertImage(source, [ipfs], { name: 'test', tmpDir: dir, logger, chunkSize: 1 << 20 })
  } finally {
    await source.close()
  }
  return ipfs.image?.root.toString() ?? ''
}

/**
 * What `pull` and `image inspect` read (index, manifest, config), then what a lazy mount reads
 * (a layer's footer and TOC, one file's chunks), all through `helia` on the reading node.
 */
async function readImage (blocks: BlockFetchPath, root: string): Promise<{ file: Uint8Array, layers: Descriptor[] }> {
  const image = await IpfsImageReader.open(blocks, root, { signal: AbortSignal.timeout(20_000) })
  const manifestDesc = await image.root()
  const manifest = parseManifest(await image.fetchBytes(manifestDesc), 'manifest')
  await image.fetchBytes(manifest.config)
  const layer = manifest.layers[1]
  const cid = await image.cidOf(layer)
  const source = await IpfsSource.open(blocks, cid, { readTimeout: 20_000 })
  const reader = await EstargzReader.open(async (o, l, s) => await source.read(o, l, s), await source.size(), { tocDigest: layer.annotations?.[TOC_DIGEST_ANNOTATION] })
  const file = await reader.readFile('dir1/big.bin')
  return { file, layers: manifest.layers }
}

describe('the fetch path: every reader through one composite broker', () => {
  it('index, manifest, config, TOC and chunks from a peer all come through our exchange, none through bitswap', async () => {
    const a = await node({ listen: LISTEN })
    const root = await pushImage(a)
    const b = await node()
    await connect(b, a)

    const { file } = await readImage(b.helia.blockstore, root)
    expect(file.length).toBe(3 * MiB + 1234)
    expect(file.every(x => x === 2)).toBe(true)

    const stages = b.fetchStats()
    const ex = b.exchange.stats()
    expect(stages.exchangeBlocks).toBeGreaterThan(5) // root dir, index.json, manifest, config, layer root, footer/TOC leaves, chunks
    expect(stages.exchangeBlocks).toBe(ex.blocksReceived)
    expect(stages).toMatchObject({ bitswapBlocks: 0, gatewayBlocks: 0, failures: 0 })
    expect(a.exchange.stats().servedBlocks).toBe(stages.exchangeBlocks)

    // read again: all local now, nothing new from the network
    await b.flush()
    await readImage(b.helia.blockstore, root)
    const again = b.fetchStats()
    expect(again.exchangeBlocks).toBe(stages.exchangeBlocks)
    expect(again.localBlocks).toBeGreaterThan(stages.localBlocks)
  })

  it('the node\'s own entry to the same path (node.blocks, without Helia\'s wrapping) takes the same stages', async () => {
    const a = await node({ listen: LISTEN })
    const root = await pushImage(a)
    const b = await node()
    await connect(b, a)
    const { file } = await readImage(b.blocks, root)
    expect(file.length).toBe(3 * MiB + 1234)
    expect(file.every(x => x === 2)).toBe(true)
    const stages = b.fetchStats()
    expect(stages.exchangeBlocks).toBeGreaterThan(5)
    expect(stages).toMatchObject({ bitswapBlocks: 0, gatewayBlocks: 0, failures: 0 })
    expect(a.exchange.stats().servedBlocks).toBe(stages.exchangeBlocks)
    // fetched blocks are stored: read again offline, all local
    await b.flush()
    const offline = await collectBlock(b.blocks.get((await IpfsImageReader.open(b.blocks, root)).rootCid, { offline: true }))
    expect(offline.length).toBeGreaterThan(0)
    const before = b.fetchStats().exchangeBlocks
    await readImage(b.blocks, root)
    expect(b.fetchStats().exchangeBlocks).toBe(before)
  })

  it('a stock Helia node (bitswap only) fetches a pushed image from our node, and ours from it', async () => {
    const a = await node({ listen: LISTEN })
    const root = await pushImage(a)
    const plain = await plainHelia(LISTEN)
    await plain.libp2p.dial(a.multiaddrs()[0])

    const { file } = await readImage(plain.blockstore, root)
    expect(file.length).toBe(3 * MiB + 1234)
    expect(a.exchange.stats().servedRequests).toBe(0) // it does not speak our protocol

    // the other way: our node reads from the stock node; with no exchange peer, bitswap at once
    const b = await node()
    await b.dial(plain.libp2p.getMultiaddrs()[0] as never)
    expect(b.exchange.peers()).toEqual([])
    await readImage(b.helia.blockstore, root)
    expect(b.fetchStats()).toMatchObject({ exchangeBlocks: 0, gatewayBlocks: 0 })
    expect(b.fetchStats().bitswapBlocks).toBeGreaterThan(5)
  })

  it('when every exchange peer says don\'t-have, bitswap is asked at once (not after the exchange budget)', async () => {
    const empty = await node({ listen: LISTEN }) // speaks the exchange, has nothing
    const plain = await plainHelia(LISTEN) // has the block, bitswap only
    const data = random(300_000)
    const { cid } = await importBytes(plain.blockstore, data)
    const b = await node({ fetch: { exchangeBudget: 10_000 } })
    await connect(b, empty)
    await b.dial(plain.libp2p.getMultiaddrs()[0] as never)

    const t0 = Date.now()
    const got = await collectBlock(b.helia.blockstore.get(cid, { signal: AbortSignal.timeout(8000) }))
    expect(Date.now() - t0).toBeLessThan(3000)
    expect(Buffer.compare(Buffer.from(got), data)).toBe(0)
    expect(b.exchange.stats().dontHaves).toBe(1)
    expect(b.fetchStats()).toMatchObject({ exchangeBlocks: 0, bitswapBlocks: 1 })
  })

  it('a silent exchange peer delays bitswap by the exchange budget only', async () => {
    const silent = await node({ listen: LISTEN, exchange: false })
    const hold = new Promise<void>(resolve => releases.push(resolve))
    await silent.helia.libp2p.handle(PROTOCOL, async () => { await hold })
    const plain = await plainHelia(LISTEN)
    const data = random(1000)
    const { cid } = await importBytes(plain.blockstore, data)
    const budget = 300
    const b = await node({ fetch: { exchangeBudget: budget } })
    await connect(b, silent)
    await b.dial(plain.libp2p.getMultiaddrs()[0] as never)

    const t0 = Date.now()
    const got = await collectBlock(b.helia.blockstore.get(cid, { signal: AbortSignal.timeout(8000) }))
    const took = Date.now() - t0
    expect(Buffer.compare(Buffer.from(got), data)).toBe(0)
    expect(took).toBeGreaterThanOrEqual(budget - 5)
    expect(took).toBeLessThan(budget + 2500) // the exchange's own timeout is 5 s
    expect(b.fetchStats()).toMatchObject({ exchangeBlocks: 0, bitswapBlocks: 1 })
  })
})

describe('the gateway stage', () => {
  /** A trustless gateway over a node's local blockstore; `lie` flips a byte of every block. */
  async function gateway (from: IpfsNode, lie = false): Promise<{ url: string, requests: () => number }> {
    let requests = 0
    const server: Server = createServer((req, res) => {
      requests++
      const m = /^\/ipfs\/([^/?]+)\?format=raw$/.exec(req.url ?? '')
      if (m == null || req.headers.accept !== 'application/vnd.ipld.raw') { res.writeHead(400).end(); return }
      collectBlock(from.localBlockstore.get(CID.parse(m[1]))).then((bytes) => {
        const out = Buffer.from(bytes)
        if (lie) out[0] ^= 0xff
        res.writeHead(200, { 'content-type': 'application/vnd.ipld.raw', 'content-length': out.length }).end(out)
      }, () => { res.writeHead(404).end() })
    })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    stops.push(async () => { await new Promise(resolve => server.close(resolve)) })
    const port = (server.address() as { port: number }).port
    return { url: `http://127.0.0.1:${port}`, requests: () => requests }
  }

  it('with no peer, blocks come from the configured gateways in order; a lying one is skipped and nothing it sent is stored', async () => {
    const a = await node()
    const data = random(2 * MiB + 500)
    const { cid } = await importBytes(a.localBlockstore, data)
    const liar = await gateway(a, true)
    const honest = await gateway(a)
    const b = await node({ gateways: [liar.url, honest.url + '/'] })

    const source = await IpfsSource.open(b.blocks, cid, { readTimeout: 10_000 })
    const got = await source.read(0, data.length)
    expect(Buffer.compare(Buffer.from(got), data)).toBe(0)
    const stages = b.fetchStats()
    expect(stages.gatewayBlocks).toBe(4) // root + 3 leaves
    expect(stages).toMatchObject({ exchangeBlocks: 0, bitswapBlocks: 0 })
    expect(liar.requests()).toBe(4)
    await b.flush()
    for await (const { cid: c } of b.localBlockstore.getAll()) {
      const bytes = await collectBlock(b.localBlockstore.get(c))
      expect(Buffer.compare(Buffer.from(bytes), Buffer.from(await collectBlock(a.localBlockstore.get(c))))).toBe(0)
    }
  })

  it('a gateway that sends too much or never answers is given up on (bounded), the next one is asked', async () => {
    const a = await node()
    const data = random(3000)
    const { cid } = await importBytes(a.localBlockstore, data)
    const huge = createServer((_req, res) => { res.writeHead(200, { 'content-type': 'application/vnd.ipld.raw' }); res.end(Buffer.alloc(5000)) }) // no content-length: chunked
    const silent = createServer(() => {}) // accepts, never answers
    for (const srv of [huge, silent]) {
      await new Promise<void>(resolve => srv.listen(0, '127.0.0.1', resolve))
      stops.push(async () => { srv.closeAllConnections(); await new Promise(resolve => srv.close(resolve)) })
    }
    const url = (srv: Server): string => `http://127.0.0.1:${(srv.address() as { port: number }).port}`
    const honest = await gateway(a)
    const b = await node({ gateways: [url(huge), url(silent), honest.url], gateway: { maxBlockSize: 4000, requestTimeout: 300 } })
    const t0 = Date.now()
    const got = await collectBlock(b.helia.blockstore.get(cid, { signal: AbortSignal.timeout(5000) }))
    expect(Buffer.compare(Buffer.from(got), data)).toBe(0)
    expect(Date.now() - t0).toBeLessThan(2000)
    expect(b.fetchStats().gatewayBlocks).toBe(1)
  })

  it('refuses a gateway that is not an http(s) base URL', async () => {
    await expect(createNode({ repo: await repos.dir(), logger, gateways: ['ftp://example.org'] })).rejects.toMatchObject({ code: 'ERR_INVALID_OPTION' })
    await expect(createNode({ repo: await repos.dir(), logger, gateways: ['https://gw.example/?x=1'] })).rejects.toMatchObject({ code: 'ERR_INVALID_OPTION' })
  })
})
