import { afterAll, describe, expect, it } from 'vitest'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { BlockExchange, PROTOCOL, ranksAbove, type ExchangeBlockstore } from '../../src/ipfs/block-exchange.js'
import { collectBlock } from '../../src/ipfs/dag-reader.js'
import { createNode, type IpfsNode, type NodeOptions } from '../../src/ipfs/node.js'
import { silentLogger } from '../../src/logging.js'
import { TempRepos, blockWhere, random, until } from './helpers.js'

/**
 * Sharing between nodes that fetch at the same time: a node asked for a block it is fetching
 * answers once the block arrives; a node asked for a block of a DAG it has open fetches it for
 * the asker (cooperative fetch), so the origin sends each block about once; waits climb the
 * rendezvous rank and never cycle; a stranger cannot make a node fetch what it would not; load
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
const id = (n: IpfsNode): string => n.peerId.toString()

/** Makes a node want these blocks, as a reader that decoded the node linking them does. */
function want (n: IpfsNode, cids: CID[]): void {
  n.blocks.links?.open().add(cids)
}

/**
 * An origin whose exchange answers every block after `delayMs` (a slow uplink), counting what it
 * serves; a seed (it reads nothing), as the daemon holding a pushed image is.
 */
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
  const ex = new BlockExchange({ libp2p: n.helia.libp2p, blockstore: store, seeding: () => true, logger: silentLogger() })
  await ex.start()
  started.push(ex)
  return Object.assign(Object.create(n) as IpfsNode, { exchange: ex })
}

describe('sharing while fetching', () => {
  it('a node asked for a block it is fetching answers once the block arrives, not don\'t-have', async () => {
    const a = await node({ listen: LISTEN })
    const b = await node()
    // a ranks above b: it waits for b (one ranked below would answer b from its blockstore only)
    const { cid, bytes } = await blockWhere(c => ranksAbove(c, id(a), id(b)), 100_000)
    const origin = await slowOrigin(new Map([[cid.toString(), bytes]]), 500)
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
    // a asks the origin only (no hedge to b while b asks it: that would be the two-node cycle)
    const a = await node({ listen: LISTEN, exchange: { hedgeDelay: 5000, maxHedgeDelay: 5000, loadSpread: 0 } })
    const other = await node({ listen: LISTEN })
    // long enough for the pending frame to come back on a new stream, well short of the origin's second
    const b = await node({ exchange: { hedgeDelay: 300, maxHedgeDelay: 300, loadSpread: 0 } })
    // a ranks above b for the block (so it waits for b), the other holder below b (so b asks a first)
    const { cid, bytes } = await blockWhere(c => ranksAbove(c, id(a), id(b)) && ranksAbove(c, id(b), id(other)), 100_000)
    const origin = await slowOrigin(new Map([[cid.toString(), bytes]]), 1000)
    await other.localBlockstore.put(cid, bytes)
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

  it('two nodes fetching the same block do not wait on each other: the one ranked higher goes to the origin, the other waits on it', async () => {
    // no hedging within the test's time, and peers asked in the order they connected: each asks the other first
    const opts = { listen: LISTEN, exchange: { hedgeDelay: 10_000, maxHedgeDelay: 10_000, loadSpread: 0 } }
    const a = await node(opts)
    const b = await node(opts)
    const blocks = new Map<string, Uint8Array>()
    const origin = await slowOrigin(blocks, 200)
    // the origin ranks below both: each asks the other first
    const { cid, bytes } = await blockWhere(c => ranksAbove(c, id(a), id(origin)) && ranksAbove(c, id(b), id(origin)), 50_000)
    blocks.set(cid.toString(), bytes)
    await connect(a, b)
    await connect(b, a)
    await connect(a, origin)
    await connect(b, origin)

    const t0 = Date.now()
    const [ga, gb] = await Promise.all([
      collectBlock(a.blocks.get(cid, { signal: AbortSignal.timeout(10_000) })),
      collectBlock(b.blocks.get(cid, { signal: AbortSignal.timeout(10_000) }))
    ])
    // waiting on each other would take the serve wait (1.5 s) before either moved on
    expect(Date.now() - t0).toBeLessThan(1200)
    expect(same(ga, bytes) && same(gb, bytes)).toBe(true)
    // the one ranked lower answered don't-have (if asked); the other fetched from the origin and served it on
    expect(origin.exchange.stats().servedBlocks).toBe(1)
    const [higher, lower] = ranksAbove(cid, id(a), id(b)) ? [a, b] : [b, a]
    expect(lower.exchange.stats()).toMatchObject({ servedAfterWait: 0, servedBlocks: 0 })
    expect(higher.exchange.stats()).toMatchObject({ servedAfterWait: 1, servedBlocks: 1 })
    expect(lower.exchange.peerStats()[id(higher)]).toMatchObject({ blocksReceived: 1 })
  })

  it('spreads the blocks it asks for over the peers that hold them, instead of always the same one', async () => {
    const blocks = await Promise.all(Array.from({ length: 64 }, async () => { const b = random(4000); return { cid: await rawBlock(b), bytes: b } }))
    const p1 = await node({ listen: LISTEN })
    const p2 = await node({ listen: LISTEN })
    for (const { cid, bytes } of blocks) { await p1.localBlockstore.put(cid, bytes); await p2.localBlockstore.put(cid, bytes) }
    // nodes that read (not seeds): each block goes first to the one that ranks above b, if one
    // does, else to the cheaper; seeds would be ordered by answer time alone, which a loaded
    // machine skews
    for (const p of [p1, p2]) want(p, [blocks[0].cid])
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
    want(honest, [await rawBlock(random(10))]) // it reads something: no seed (a hedge would pass a seed over)
    const b = await node({ exchange: { requestTimeout: 800, hedgeDelay: 50, loadSpread: 0, hedgePercent: 1, maxHedgeTokens: 1, maxTimeouts: 10 } })
    await connect(b, silent)
    await connect(b, honest)
    const get = async (): Promise<number> => {
      // the silent peer ranks above b and the honest one below: b asks the silent one first
      const { cid, bytes } = await blockWhere(c => ranksAbove(c, id(silent), id(b)) && ranksAbove(c, id(b), id(honest)), 1000)
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

describe('cooperative fetches (1.2.0)', () => {
  /** n nodes, every one connected to every other and to the origin, each wanting `cids` (as a mount of their layer does). */
  async function cluster (n: number, origin: IpfsNode, cids: CID[], exchange: NodeOptions['exchange'] = {}): Promise<IpfsNode[]> {
    const nodes = await Promise.all(Array.from({ length: n }, async () => await node({ listen: LISTEN, exchange })))
    for (const [i, a] of nodes.entries()) {
      await connect(a, origin)
      for (const b of nodes.slice(i + 1)) await connect(a, b)
      for (const b of nodes.slice(0, i)) await until(() => a.exchange.peers().some(p => p.equals(b.peerId)), 'identify')
      want(a, cids)
    }
    return nodes
  }

  /** Every node reads a block of the origin's first: its answer says it is a seed (as a mount's first blocks, the image's index, do). */
  async function learnSeed (nodes: IpfsNode[], blocks: Map<string, Uint8Array>): Promise<void> {
    const bytes = random(100)
    const cid = await rawBlock(bytes)
    blocks.set(cid.toString(), bytes)
    for (const n of nodes) expect(same(await n.exchange.get(cid), bytes)).toBe(true)
  }

  it('N nodes reading the same blocks at once: the origin sends each block about once, the nodes fetch them for each other', async () => {
    const blocks = new Map<string, Uint8Array>()
    const origin = await slowOrigin(blocks, 100)
    const data = await Promise.all(Array.from({ length: 24 }, async () => { const b = random(50_000); return { cid: await rawBlock(b), bytes: b } }))
    const nodes = await cluster(4, origin, data.map(d => d.cid))
    await learnSeed(nodes, blocks)
    const before = origin.exchange.stats().servedBlocks
    for (const d of data) blocks.set(d.cid.toString(), d.bytes)

    const got = await Promise.all(nodes.map(async n => await Promise.all(data.map(async d => await collectBlock(n.blocks.get(d.cid, { signal: AbortSignal.timeout(20_000) }))))))
    for (const per of got) for (const [i, d] of data.entries()) expect(same(per[i], d.bytes)).toBe(true)
    const fromOrigin = origin.exchange.stats().servedBlocks - before
    // each block once, but for a hedge or a wait that ran out on a loaded machine (without
    // cooperative fetches: ~1.5 to 2 copies, most nodes asked first answering don't-have)
    const why = JSON.stringify(nodes.map(n => { const s = n.exchange.stats(); return { hedges: s.hedges, waitsInVain: s.waitsInVain, cooperative: s.cooperativeFetches } }))
    expect(fromOrigin, why).toBeGreaterThanOrEqual(data.length)
    expect(fromOrigin, why).toBeLessThanOrEqual(Math.ceil(data.length * 1.25))
    // the rest went from node to node (while the node ranked highest was fetching, or after)
    expect(nodes.reduce((s, n) => s + n.exchange.stats().servedBlocks, 0)).toBeGreaterThanOrEqual(data.length * nodes.length - fromOrigin)
    expect(nodes.reduce((s, n) => s + n.fetchStats().bitswapBlocks, 0)).toBe(0)
  })

  it('waits climb the rank: nodes all asking each other for one block at once get it without waiting out a timeout, from one copy', async () => {
    // no hedges: only the waits decide; a cycle of waits would last the serve wait (1.5 s)
    const blocks = new Map<string, Uint8Array>()
    const origin = await slowOrigin(blocks, 200)
    const nodes = await cluster(4, origin, [], { hedgeDelay: 10_000, maxHedgeDelay: 10_000, loadSpread: 0 })
    await learnSeed(nodes, blocks)
    const before = origin.exchange.stats().servedBlocks
    for (let round = 0; round < 3; round++) {
      const bytes = random(50_000)
      const cid = await rawBlock(bytes)
      blocks.set(cid.toString(), bytes)
      for (const n of nodes) want(n, [cid])
      const t0 = Date.now()
      const got = await Promise.all(nodes.map(async n => await collectBlock(n.blocks.get(cid, { signal: AbortSignal.timeout(10_000) }))))
      expect(Date.now() - t0).toBeLessThan(1400)
      for (const g of got) expect(same(g, bytes)).toBe(true)
      expect(origin.exchange.stats().servedBlocks - before).toBe(round + 1)
    }
    expect(nodes.reduce((s, n) => s + n.exchange.stats().waitsInVain, 0)).toBe(0)
  })

  it('a stranger asking for a block the node has no DAG open for hears don\'t-have, and nothing is fetched; one of its open layer is fetched for it', async () => {
    const blocks = new Map<string, Uint8Array>()
    const origin = await slowOrigin(blocks, 50)
    const a = await node({ listen: LISTEN })
    const stranger = await node()
    await connect(a, origin)
    await connect(stranger, a) // knows a only
    // a ranks above the stranger for both blocks: only the open DAG makes the difference
    const unrelated = await blockWhere(c => ranksAbove(c, id(a), id(stranger)))
    const linked = await blockWhere(c => ranksAbove(c, id(a), id(stranger)))
    for (const b of [unrelated, linked]) blocks.set(b.cid.toString(), b.bytes)
    want(a, [linked.cid])

    expect(await stranger.exchange.get(unrelated.cid)).toBeUndefined()
    expect(a.exchange.stats()).toMatchObject({ cooperativeFetches: 0, servedDontHaves: 1 })
    expect(a.fetchStats().exchangeBlocks).toBe(0)
    expect(origin.exchange.stats().servedBlocks).toBe(0)

    expect(same(await stranger.exchange.get(linked.cid), linked.bytes)).toBe(true)
    expect(a.exchange.stats()).toMatchObject({ cooperativeFetches: 1, servedAfterWait: 1 })
    expect(a.fetchStats()).toMatchObject({ onBehalfBlocks: 1, exchangeBlocks: 1 })
    expect(origin.exchange.stats().servedBlocks).toBe(1)
    // stored: the next asker is answered from the blockstore
    expect(same(await collectBlock(a.localBlockstore.get(linked.cid)), linked.bytes)).toBe(true)
  })

  it('at most maxCooperativeFetches run at once; past them the block is answered don\'t-have', async () => {
    const blocks = new Map<string, Uint8Array>()
    const origin = await slowOrigin(blocks, 600)
    const a = await node({ listen: LISTEN, exchange: { maxCooperativeFetches: 2 } })
    // one CID a request, five requests at once
    const asker = await node({ exchange: { requestCids: 1 } })
    await connect(a, origin)
    await connect(asker, a)
    const data = await Promise.all(Array.from({ length: 5 }, async () => await blockWhere(c => ranksAbove(c, id(a), id(asker)))))
    for (const d of data) blocks.set(d.cid.toString(), d.bytes)
    want(a, data.map(d => d.cid))
    const got = await Promise.all(data.map(async d => await asker.exchange.get(d.cid)))
    expect(got.filter(g => g != null)).toHaveLength(2)
    expect(a.exchange.stats()).toMatchObject({ cooperativeFetches: 2, cooperativeBusy: 3 })
    expect(origin.exchange.stats().servedBlocks).toBe(2)
  })

  it('a hedge never goes to a seed: the get waits for its peer, then asks the seed', async () => {
    const blocks = new Map<string, Uint8Array>()
    const origin = await slowOrigin(blocks, 0)
    const silent = await node({ listen: LISTEN, exchange: false })
    const hold = new Promise<void>(resolve => releases.push(resolve))
    await silent.helia.libp2p.handle(PROTOCOL, async () => { await hold })
    const b = await node({ exchange: { requestTimeout: 800, hedgeDelay: 50, maxHedgeDelay: 50, maxTimeouts: 10 } })
    await connect(b, origin)
    // b learns the origin is a seed from its first block (the silent peer ranks below b for it: asked after)
    const first = await blockWhere(c => ranksAbove(c, id(b), id(silent)), 100)
    blocks.set(first.cid.toString(), first.bytes)
    expect(same(await b.exchange.get(first.cid), first.bytes)).toBe(true)
    await connect(b, silent)
    // the silent peer ranks above b: asked first, and never answers
    const d = await blockWhere(c => ranksAbove(c, id(silent), id(b)))
    blocks.set(d.cid.toString(), d.bytes)
    const t0 = Date.now()
    expect(same(await b.exchange.get(d.cid), d.bytes)).toBe(true)
    expect(Date.now() - t0).toBeGreaterThanOrEqual(750) // the silent peer's timeout, not a hedge after 50 ms
    expect(b.exchange.stats()).toMatchObject({ hedges: 0, failedRequests: 1 })
    expect(origin.exchange.stats().servedBlocks).toBe(2)
  })

  it('a hedge does not start a cooperative fetch', async () => {
    const blocks = new Map<string, Uint8Array>()
    const origin = await slowOrigin(blocks, 800)
    const first = await node({ listen: LISTEN })
    const second = await node({ listen: LISTEN })
    const asker = await node({ exchange: { hedgeDelay: 20, maxHedgeDelay: 20, loadSpread: 0 } })
    // the asker asks `first` (ranked above it), then hedges to `second` (ranked above it too)
    const d = await blockWhere(c => ranksAbove(c, id(first), id(second)) && ranksAbove(c, id(second), id(asker)))
    blocks.set(d.cid.toString(), d.bytes)
    for (const n of [first, second]) { await connect(n, origin); want(n, [d.cid]) }
    await connect(asker, first)
    await connect(asker, second)
    // `first` fetches for the asker; the hedge to `second` (sent before the pending frame came, slowed down here) starts nothing
    const got = await asker.exchange.get(d.cid)
    expect(same(got, d.bytes)).toBe(true)
    expect(first.exchange.stats().cooperativeFetches).toBe(1)
    expect(second.exchange.stats().cooperativeFetches).toBe(0)
    expect(origin.exchange.stats().servedBlocks).toBe(1)
  })
})
