import { afterAll, describe, expect, it } from 'vitest'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { BlockExchange, PROTOCOL, type ExchangeBlockstore } from '../../src/ipfs/block-exchange.js'
import { collectBlock } from '../../src/ipfs/dag-reader.js'
import { createNode, type IpfsNode, type NodeOptions } from '../../src/ipfs/node.js'
import { silentLogger } from '../../src/logging.js'
import { TempRepos, random, until } from './helpers.js'

/**
 * Sharing between nodes that fetch at the same time: a node asked for a block it is fetching
 * answers once the block arrives; two nodes asking each other do not wait on each other; load
 * spreads over the peers that hold the blocks; peers that keep timing out are set aside.
 */

const repos = new TempRepos()
const started: Array<{ stop: () => Promise<void> }> = []
const releases: Array<() => void> = []
afterAll(async () => {
  for (const r of releases) r()
  for (const s of started.reverse()) await s.stop().catch(() => {})
  await repos.cleanup()
})

const LISTEN = ['/ip4/127.0.0.1/tcp/0']

async function node (opts: Partial<NodeOptions> = {}): Promise<IpfsNode> {
  const n = await createNode({ repo: await repos.dir(), logger: silentLogger(), inboundConnectionsPerSec: 1000, ...opts })
  started.push(n)
  return n
}

async function connect (from: IpfsNode, to: IpfsNode): Promise<void> {
  await from.dial(to.multiaddrs()[0])
  await until(() => from.exchange.peers().some(p => p.equals(to.peerId)), 'identify')
}

async function rawBlock (bytes: Uint8Array): Promise<CID> {
  return CID.createV1(raw.code, await sha256.digest(bytes))
}

const same = (a: Uint8Array | undefined, b: Uint8Array): boolean => a != null && Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

/** An origin whose exchange answers every block after `delayMs` (a slow uplink), counting what it serves. */
async function slowOrigin (blocks: Map<string, Uint8Array>, delayMs: number): Promise<IpfsNode> {
  const n = await node({ listen: LISTEN, exchange: false })
  const store: ExchangeBlockstore = {
    get: async function * (cid: CID) {
      await sleep(delayMs)
      const b = blocks.get(cid.toString())
      if (b == null) throw new Error('not found')
      yield b
    }
  }
  const ex = new BlockExchange({ libp2p: n.helia.libp2p, blockstore: store, logger: silentLogger() })
  await ex.start()
  started.push(ex)
  return Object.assign(Object.create(n) as IpfsNode, { exchange: ex })
}

describe('sharing while fetching', () => {
  it('a node asked for a block it is fetching answers once the block arrives, not don\'t-have', async () => {
    const bytes = random(100_000)
    const cid = await rawBlock(bytes)
    const origin = await slowOrigin(new Map([[cid.toString(), bytes]]), 500)
    const a = await node({ listen: LISTEN })
    const b = await node()
    await connect(a, origin)
    await connect(b, a) // b knows only a

    const aRead = collectBlock(a.blocks.get(cid, { signal: AbortSignal.timeout(10_000) }))
    await sleep(100) // a's fetch from the origin is under way
    const t0 = Date.now()
    const got = await b.exchange.get(cid)
    expect(same(got, bytes)).toBe(true)
    expect(Date.now() - t0).toBeLessThan(2000)
    expect(same(await aRead, bytes)).toBe(true)
    expect(a.exchange.stats()).toMatchObject({ servedAfterWait: 1, servedBlocks: 1, servedDontHaves: 0 })
    expect(origin.exchange.stats().servedBlocks).toBe(1) // the origin sent it once
    expect(b.exchange.peerStats()[a.peerId.toString()]).toMatchObject({ blocksReceived: 1, bytesReceived: bytes.length })
    expect(a.exchange.peerStats()[b.peerId.toString()]).toMatchObject({ blocksServed: 1, bytesServed: bytes.length })
  })

  it('a peer that says it is fetching the block is waited for, not hedged: a second holder is not asked', async () => {
    const bytes = random(100_000)
    const cid = await rawBlock(bytes)
    const origin = await slowOrigin(new Map([[cid.toString(), bytes]]), 1000)
    // a asks the origin only (no hedge to b while b asks it: that would be the two-node cycle)
    const a = await node({ listen: LISTEN, exchange: { hedgeDelay: 5000, maxHedgeDelay: 5000, loadSpread: 0 } })
    const other = await node({ listen: LISTEN })
    await other.localBlockstore.put(cid, bytes)
    // long enough for the pending frame to come back on a new stream, well short of the origin's second
    const b = await node({ exchange: { hedgeDelay: 300, maxHedgeDelay: 300, loadSpread: 0 } })
    await connect(a, origin)
    await connect(b, a) // asked first
    await connect(b, other)
    const aRead = collectBlock(a.blocks.get(cid, { signal: AbortSignal.timeout(10_000) }))
    await sleep(50)
    expect(same(await b.exchange.get(cid), bytes)).toBe(true)
    expect(same(await aRead, bytes)).toBe(true)
    expect(b.exchange.stats()).toMatchObject({ pendingAnswers: 1, hedges: 0 })
    expect(other.exchange.stats().servedBlocks).toBe(0) // without the pending frame: hedged to it after 300 ms
    expect(a.exchange.stats().servedAfterWait).toBe(1)
  })

  it('two nodes fetching the same block that ask each other first do not wait on each other: one goes to the origin, the other waits on it', async () => {
    const bytes = random(50_000)
    const cid = await rawBlock(bytes)
    const origin = await slowOrigin(new Map([[cid.toString(), bytes]]), 200)
    // no hedging within the test's time, and peers asked in the order they connected: each asks the other first
    const opts = { listen: LISTEN, exchange: { hedgeDelay: 10_000, maxHedgeDelay: 10_000, loadSpread: 0 } }
    const a = await node(opts)
    const b = await node(opts)
    await connect(a, b)
    await connect(b, a)
    await connect(a, origin)
    await connect(b, origin)
    expect(a.exchange.peers()[0].equals(b.peerId)).toBe(true)
    expect(b.exchange.peers()[0].equals(a.peerId)).toBe(true)

    const t0 = Date.now()
    const [ga, gb] = await Promise.all([
      collectBlock(a.blocks.get(cid, { signal: AbortSignal.timeout(10_000) })),
      collectBlock(b.blocks.get(cid, { signal: AbortSignal.timeout(10_000) }))
    ])
    // waiting on each other would take the serve wait (1.5 s) before either moved on
    expect(Date.now() - t0).toBeLessThan(1200)
    expect(same(ga, bytes) && same(gb, bytes)).toBe(true)
    // the greater peer id answered don't-have; the other fetched from the origin and served it on
    expect(origin.exchange.stats().servedBlocks).toBe(1)
    const [lower, greater] = a.peerId.toString() < b.peerId.toString() ? [a, b] : [b, a]
    expect(greater.exchange.stats()).toMatchObject({ servedDontHaves: 1, servedAfterWait: 0 })
    expect(lower.exchange.stats()).toMatchObject({ servedAfterWait: 1, servedBlocks: 1 })
    expect(greater.fetchStats().exchangeBlocks).toBe(1)
  })

  it('spreads the blocks it asks for over the peers that hold them, instead of always the same one', async () => {
    const blocks = await Promise.all(Array.from({ length: 64 }, async () => { const b = random(4000); return { cid: await rawBlock(b), bytes: b } }))
    const p1 = await node({ listen: LISTEN })
    const p2 = await node({ listen: LISTEN })
    for (const { cid, bytes } of blocks) { await p1.localBlockstore.put(cid, bytes); await p2.localBlockstore.put(cid, bytes) }
    // no hedges: on a loaded machine a hedged get receives its block from both peers, and the
    // counts below would no longer add up to the blocks asked for
    const b = await node({ exchange: { hedgeDelay: 60_000 } })
    await connect(b, p1)
    await connect(b, p2)
    for (const { cid, bytes } of blocks) expect(same(await b.exchange.get(cid), bytes)).toBe(true)
    const per = b.exchange.peerStats()
    const n1 = per[p1.peerId.toString()]?.blocksReceived ?? 0
    const n2 = per[p2.peerId.toString()]?.blocksReceived ?? 0
    expect(n1 + n2).toBe(64)
    expect(Math.min(n1, n2)).toBeGreaterThanOrEqual(4) // about half each; without spreading one peer gets all
  })

  it('hedges within a budget: once it is spent, a get waits for its peer instead of asking another for a copy', async () => {
    const silent = await node({ listen: LISTEN, exchange: false })
    const hold = new Promise<void>(resolve => releases.push(resolve))
    await silent.helia.libp2p.handle(PROTOCOL, async () => { await hold })
    const honest = await node({ listen: LISTEN })
    const b = await node({ exchange: { requestTimeout: 800, hedgeDelay: 50, loadSpread: 0, hedgePercent: 1, maxHedgeTokens: 1, maxTimeouts: 10 } })
    await connect(b, silent)
    await connect(b, honest)
    const get = async (): Promise<number> => {
      const bytes = random(1000)
      const cid = await rawBlock(bytes)
      await honest.localBlockstore.put(cid, bytes)
      const t0 = Date.now()
      expect(same(await b.exchange.get(cid), bytes)).toBe(true)
      return Date.now() - t0
    }
    expect(await get()).toBeLessThan(500) // hedged to the honest peer after 50 ms
    expect(b.exchange.stats()).toMatchObject({ hedges: 1, hedgesSkipped: 0 })
    await until(() => b.exchange.stats().failedRequests === 1, 'the silent peer\'s timeout') // nothing in flight to it now: asked first again
    expect(await get()).toBeGreaterThanOrEqual(750) // no token left: the silent peer's timeout, then the next
    expect(b.exchange.stats()).toMatchObject({ hedges: 1, hedgesSkipped: 1 })
  })

  it('when every connected peer is one the exchange asks, bitswap waits for the exchange instead of joining after its budget', async () => {
    const bytes = random(20_000)
    const cid = await rawBlock(bytes)
    // the exchange answers after 600 ms; the same node's bitswap would answer at once
    const peer = await slowOrigin(new Map([[cid.toString(), bytes]]), 600)
    await peer.helia.blockstore.put(cid, bytes)
    const b = await node({ fetch: { exchangeBudget: 100 } })
    await connect(b, peer)
    const got = await collectBlock(b.blocks.get(cid, { signal: AbortSignal.timeout(10_000) }))
    expect(same(got, bytes)).toBe(true)
    expect(b.fetchStats()).toMatchObject({ exchangeBlocks: 1, bitswapBlocks: 0 })
  })

  it('a peer whose requests keep timing out is set aside; the others are asked at once', async () => {
    const silent = await node({ listen: LISTEN, exchange: false })
    const hold = new Promise<void>(resolve => releases.push(resolve))
    await silent.helia.libp2p.handle(PROTOCOL, async () => { await hold })
    const honest = await node({ listen: LISTEN })
    const b = await node({ exchange: { requestTimeout: 300, hedgeDelay: 10_000, maxHedgeDelay: 10_000, loadSpread: 0, maxTimeouts: 2 } })
    await connect(b, silent)
    for (let i = 0; i < 2; i++) {
      const t0 = Date.now()
      expect(await b.exchange.get(await rawBlock(random(1000)))).toBeUndefined() // after the timeout
      expect(Date.now() - t0).toBeGreaterThanOrEqual(290)
    }
    await connect(b, honest)
    expect(b.exchange.stats()).toMatchObject({ suspensions: 1 })
    expect(b.exchange.peers().map(String)).toEqual([honest.peerId.toString()])
    const bytes = random(1000)
    const cid = await rawBlock(bytes)
    await honest.localBlockstore.put(cid, bytes)
    const t0 = Date.now()
    expect(same(await b.exchange.get(cid), bytes)).toBe(true)
    expect(Date.now() - t0).toBeLessThan(250) // not asked: no timeout to wait for
  })
})
