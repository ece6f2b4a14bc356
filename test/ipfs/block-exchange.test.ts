import { afterAll, describe, expect, it } from 'vitest'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { BlockExchange, DEFAULTS, encodeRequest, PROTOCOL, ranksAbove, type BlockExchangeComponents, type ExchangeBlockstore } from '../../src/ipfs/block-exchange.js'
import { InvalidOptionError } from '../../src/ipfs/errors.js'
import { collectBlock } from '../../src/ipfs/dag-reader.js'
import { importBytes } from '../../src/ipfs/import.js'
import { createNode, type IpfsNode, type NodeOptions } from '../../src/ipfs/node.js'
import { silentLogger } from '../../src/logging.js'
import { TempRepos, blockWhere, leafMap, random, until } from './helpers.js'

const repos = new TempRepos()
const started: Array<{ stop: () => Promise<void> }> = []
const releases: Array<() => void> = []
afterAll(async () => {
  for (const r of releases) r()
  for (const s of started.reverse()) await s.stop().catch(() => {})
  await repos.cleanup()
})

const MiB = 1 << 20
const LISTEN = ['/ip4/127.0.0.1/tcp/0']

async function node (opts: Partial<NodeOptions> = {}): Promise<IpfsNode> {
  const n = await createNode({ repo: await repos.dir(), logger: silentLogger(), ...opts })
  started.push(n)
  return n
}

/** Connects `from` to `to` and waits until `from`'s exchange knows `to` speaks the protocol. */
async function connect (from: IpfsNode, to: IpfsNode): Promise<void> {
  await from.dial(to.multiaddrs()[0])
  await until(() => from.exchange.peers().some(p => p.equals(to.peerId)), 'identify')
}

async function rawBlock (bytes: Uint8Array): Promise<CID> {
  return CID.createV1(raw.code, await sha256.digest(bytes))
}

const same = (a: Uint8Array | undefined, b: Uint8Array): boolean => a != null && Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0

/** Node A (listening) holding one 5000-byte block, node B connected to it. */
async function servingOneBlock (bOpts: Partial<NodeOptions> = {}): Promise<{ a: IpfsNode, b: IpfsNode, cid: CID, bytes: Uint8Array }> {
  const a = await node({ listen: LISTEN })
  const b = await node(bOpts)
  const bytes = random(5000)
  const cid = await rawBlock(bytes)
  await a.localBlockstore.put(cid, bytes)
  await connect(b, a)
  return { a, b, cid, bytes }
}

/** A server with its own blockstore, on a node whose built-in exchange is off. */
async function serverWith (store: ExchangeBlockstore): Promise<IpfsNode> {
  const n = await node({ listen: LISTEN, exchange: false })
  const ex = new BlockExchange({ libp2p: n.helia.libp2p, blockstore: store, logger: silentLogger() })
  await ex.start()
  started.push(ex)
  return Object.assign(Object.create(n) as IpfsNode, { exchange: ex })
}

/** A peer that announces the protocol, accepts streams and never answers. */
async function silentPeer (): Promise<IpfsNode> {
  const n = await node({ listen: LISTEN, exchange: false })
  const hold = new Promise<void>(resolve => releases.push(resolve))
  await n.helia.libp2p.handle(PROTOCOL, async () => { await hold })
  return n
}

/** A length-prefixed frame, written by hand: the wire format, independent of our framing code. */
function frame (body: Uint8Array): Uint8Array {
  const len: number[] = []
  let n = body.length
  while (n >= 0x80) { len.push((n & 0x7f) | 0x80); n >>>= 7 }
  len.push(n)
  return Buffer.concat([Uint8Array.from(len), body])
}

describe('BlockExchange over loopback TCP', () => {
  it('fetches several leaves in one request, each verified; through the node they are stored', async () => {
    const a = await node({ listen: LISTEN })
    const b = await node()
    const data = random(3 * MiB + 100)
    const { cid } = await importBytes(a.localBlockstore, data)
    const leaves = await leafMap(async (c) => await collectBlock(a.localBlockstore.get(c)), cid)
    await connect(b, a)

    const got = await Promise.all(leaves.map(async (l) => await b.exchange.get(l.cid)))
    for (let i = 0; i < leaves.length; i++) {
      expect(same(got[i], data.subarray(leaves[i].offset, leaves[i].offset + leaves[i].size))).toBe(true)
      expect(await b.localBlockstore.has(leaves[i].cid)).toBe(false) // the exchange itself stores nothing
    }
    expect(b.exchange.stats()).toMatchObject({ requests: 1, blocksReceived: 4, bytesReceived: data.length, badBlocks: 0, failedRequests: 0 })
    expect(a.exchange.stats()).toMatchObject({ servedRequests: 1, servedBlocks: 4, servedBytes: data.length })

    // through helia.blockstore (the node's fetch path) the blocks land in the local blockstore
    await Promise.all(leaves.map(async (l) => await collectBlock(b.helia.blockstore.get(l.cid))))
    await b.flush()
    for (const l of leaves) expect(await b.localBlockstore.has(l.cid)).toBe(true)
  })

  it('the streams of one burst of requests carry the next burst: no stream is opened for it', async () => {
    const a = await node({ listen: LISTEN })
    const b = await node()
    const burst = async (): Promise<CID[]> => {
      const blocks = Array.from({ length: 600 }, () => random(64 + Math.floor(Math.random() * 500)))
      const cids = await Promise.all(blocks.map(rawBlock))
      await Promise.all(cids.map(async (c, i) => { await a.localBlockstore.put(c, blocks[i]) }))
      return cids
    }
    const first = await burst()
    const second = await burst()
    await connect(b, a)
    await Promise.all(first.map(async (c) => await b.exchange.get(c)))
    const opened = b.exchange.stats().streamsOpened
    // a burst this big fills the requests a peer may have in flight, each on a stream
    expect(opened).toBeGreaterThan(8)
    await Promise.all(second.map(async (c) => await b.exchange.get(c)))
    expect(b.exchange.stats()).toMatchObject({ streamsOpened: opened, blocksReceived: 1200, failedRequests: 0 })
  })

  it('a burst of thousands of wants to one peer goes out in bounded, bigger requests: none refused, every block from the exchange', async () => {
    const a = await node({ listen: LISTEN })
    const b = await node()
    // a prefetch of a region of small files: each its own block, all wanted at once
    const blocks = Array.from({ length: 3000 }, () => random(64 + Math.floor(Math.random() * 2000)))
    const cids = await Promise.all(blocks.map(rawBlock))
    await Promise.all(cids.map(async (c, i) => { await a.localBlockstore.put(c, blocks[i]) }))
    await connect(b, a)

    const got = await Promise.all(cids.map(async (c) => await b.exchange.get(c)))
    got.forEach((g, i) => { expect(same(g, blocks[i])).toBe(true) })
    const stats = b.exchange.stats()
    expect(stats).toMatchObject({ blocksReceived: 3000, failedRequests: 0, dontHaves: 0 })
    // at most 32 at once (the server takes 64 streams per protocol): bigger requests, not more streams
    expect(stats.requests).toBeLessThan(3000 / 16)
    expect(a.exchange.stats()).toMatchObject({ servedBlocks: 3000, rejectedRequests: 0 })
  })

  it('answers undefined promptly for a CID no peer has; the server never fetches it itself', async () => {
    const a = await node({ listen: LISTEN })
    const b = await node()
    const c = await node({ listen: LISTEN })
    const bytes = random(1000)
    const onlyOnC = await rawBlock(bytes)
    await c.localBlockstore.put(onlyOnC, bytes)
    await a.dial(c.multiaddrs()[0]) // a could fetch it from c: it must not
    await connect(b, a)

    const t0 = Date.now()
    expect(await b.exchange.get(onlyOnC)).toBeUndefined()
    expect(Date.now() - t0).toBeLessThan(1000)
    expect(b.exchange.stats()).toMatchObject({ requests: 1, dontHaves: 1, blocksReceived: 0 })
    expect(a.exchange.stats()).toMatchObject({ servedDontHaves: 1, servedBlocks: 0 })
    await new Promise(resolve => setTimeout(resolve, 100))
    expect(await a.localBlockstore.has(onlyOnC)).toBe(false)
    expect(await b.localBlockstore.has(onlyOnC)).toBe(false)
  })

  it('a lying peer is rejected at once, nothing it sent is stored, the honest peer answers', async () => {
    let lies = new Uint8Array(0)
    const liar = await serverWith({ get: () => [lies] })
    const honest = await node({ listen: LISTEN })
    // a long hedge delay: the honest peer is asked because the liar's block failed, not because of time
    const b = await node({ exchange: { hedgeDelay: 5000, maxHedgeDelay: 5000, loadSpread: 0 } })
    // the liar ranks above b for the block, the honest peer below: the liar is asked first
    const { cid, bytes } = await blockWhere(c => ranksAbove(c, liar.peerId.toString(), b.peerId.toString()) && ranksAbove(c, b.peerId.toString(), honest.peerId.toString()), 64 * 1024)
    lies = Buffer.from(bytes)
    lies[100] ^= 0xff
    await honest.localBlockstore.put(cid, bytes)
    await connect(b, liar)
    await connect(b, honest)
    expect(b.exchange.peers()[0].equals(liar.peerId)).toBe(true) // asked first

    const t0 = Date.now()
    const got = await collectBlock(b.helia.blockstore.get(cid, { signal: AbortSignal.timeout(10_000) }))
    expect(Date.now() - t0).toBeLessThan(2000)
    expect(same(got, bytes)).toBe(true)
    expect(b.exchange.stats()).toMatchObject({ badBlocks: 1, blocksReceived: 1, hedges: 0 })
    expect(liar.exchange.stats().servedBlocks).toBe(1)
    expect(b.exchange.peers().map(String)).toEqual([honest.peerId.toString()]) // never asked again
    await b.flush()
    expect(same(await collectBlock(b.localBlockstore.get(cid)), bytes)).toBe(true)
    expect(b.fetchStats()).toMatchObject({ exchangeBlocks: 1, bitswapBlocks: 0 })

    // the liar alone: nothing comes back from the exchange, nothing is stored
    const other = random(2000)
    const otherCid = await rawBlock(other)
    const c = await node()
    await connect(c, liar)
    expect(await c.exchange.get(otherCid)).toBeUndefined()
    expect(c.exchange.stats().badBlocks).toBe(1)
    expect(await c.localBlockstore.has(otherCid)).toBe(false)
  })

  it('hedges: a silent peer first, the honest one answers within the hedge delay, not the 5 s timeout', async () => {
    const silent = await silentPeer()
    const honest = await node({ listen: LISTEN })
    const hedgeDelay = 200
    const b = await node({ exchange: { hedgeDelay, loadSpread: 0 } })
    const [s, h, me] = [silent, honest, b].map(n => n.peerId.toString())
    // the silent peer ranks above b for the block, the honest one below: the silent one is asked first
    const { cid, bytes } = await blockWhere(c => ranksAbove(c, s, me) && ranksAbove(c, me, h), 200_000)
    await honest.localBlockstore.put(cid, bytes)
    await connect(b, silent)
    await connect(b, honest)
    expect(b.exchange.peers()[0].equals(silent.peerId)).toBe(true) // asked first

    const t0 = Date.now()
    const got = await b.exchange.get(cid)
    const took = Date.now() - t0
    expect(same(got, bytes)).toBe(true)
    expect(took).toBeGreaterThanOrEqual(hedgeDelay - 5)
    expect(took).toBeLessThan(hedgeDelay + 1500) // the request timeout is 5000
    expect(b.exchange.stats()).toMatchObject({ hedges: 1, blocksReceived: 1 })
    // the honest peer delivered: it is asked first from now on, with no hedge needed
    expect(b.exchange.peers()[0].equals(honest.peerId)).toBe(true)
    // (a block the silent peer does not rank above b for while the honest one ranks below: the
    // silent peer, its request still in flight, costs more than the honest one within a group)
    const { cid: moreCid, bytes: more } = await blockWhere(c => !(ranksAbove(c, s, me) && ranksAbove(c, me, h)), 1000)
    await honest.localBlockstore.put(moreCid, more)
    expect(same(await b.exchange.get(moreCid), more)).toBe(true)
    expect(b.exchange.stats().hedges).toBe(1)
  })

  it('a don\'t-have moves on to the next peer at once (no hedge wait)', async () => {
    const empty = await node({ listen: LISTEN })
    const honest = await node({ listen: LISTEN })
    const b = await node({ exchange: { hedgeDelay: 3000, maxHedgeDelay: 3000, loadSpread: 0 } })
    // the empty peer ranks above b for the block, the honest one below: the empty one is asked first
    const { cid, bytes } = await blockWhere(c => ranksAbove(c, empty.peerId.toString(), b.peerId.toString()) && ranksAbove(c, b.peerId.toString(), honest.peerId.toString()), 3000)
    await honest.localBlockstore.put(cid, bytes)
    await connect(b, empty)
    await connect(b, honest)
    expect(b.exchange.peers()[0].equals(empty.peerId)).toBe(true)

    const t0 = Date.now()
    expect(same(await b.exchange.get(cid), bytes)).toBe(true)
    expect(Date.now() - t0).toBeLessThan(1500)
    expect(b.exchange.stats()).toMatchObject({ dontHaves: 1, hedges: 0, blocksReceived: 1 })
  })

  it('background gets wait behind on-demand ones: an on-demand get is answered while a big background fetch runs', async () => {
    const a = await node({ listen: LISTEN })
    const b = await node()
    const count = 48
    const blocks = Array.from({ length: count }, () => random(MiB))
    const cids = await Promise.all(blocks.map(rawBlock))
    for (let i = 0; i < count; i++) await a.localBlockstore.put(cids[i], blocks[i])
    const urgent = random(MiB)
    const urgentCid = await rawBlock(urgent)
    await a.localBlockstore.put(urgentCid, urgent)
    await connect(b, a)

    let backgroundDone = 0
    const background = Promise.all(cids.map(async (c, i) => {
      const got = await b.exchange.get(c, { priority: 'background' })
      expect(same(got, blocks[i])).toBe(true)
      backgroundDone++
    }))
    await new Promise(resolve => setTimeout(resolve, 20)) // the background fetch is under way
    const doneBefore = backgroundDone
    expect(same(await b.exchange.get(urgentCid), urgent)).toBe(true)
    const doneWhenUrgentArrived = backgroundDone
    await background
    // background requests are ≤ 4 CIDs, one in flight per peer, none while an on-demand one is:
    // the on-demand block waited for at most the background request already on the wire
    expect(doneWhenUrgentArrived - doneBefore).toBeLessThanOrEqual(8)
    expect(doneWhenUrgentArrived).toBeLessThan(count)
    const s = b.exchange.stats()
    expect(s.backgroundRequests).toBeGreaterThanOrEqual(count / 4)
    expect(s.blocksReceived).toBe(count + 1)
  })

  it('a burst of prefetch wants leaves on-demand wants requests of their own: an on-demand get goes out at once and is answered before the queued prefetch wants', async () => {
    // a server whose every block takes DELAY ms: a request holds its slot that long
    const DELAY = 400
    const held = new Map<string, Uint8Array>()
    const slow = await serverWith({
      get: async function * (c: CID) {
        const bytes = held.get(c.toString())
        if (bytes == null) throw new Error('not here')
        await new Promise(resolve => setTimeout(resolve, DELAY))
        yield bytes
      }
    })
    // small numbers, the same shape: 4 requests of ≤ 4 CIDs per peer, 1 kept for on-demand wants
    const b = await node({ exchange: { maxRequestsPerPeer: 4, demandReservedRequests: 1, maxCidsPerRequest: 4, requestCids: 4 } })
    const count = 40
    const blocks = Array.from({ length: count }, () => random(2000))
    const cids = await Promise.all(blocks.map(rawBlock))
    cids.forEach((c, i) => held.set(c.toString(), blocks[i]))
    const urgent = random(2000)
    const urgentCid = await rawBlock(urgent)
    held.set(urgentCid.toString(), urgent)
    await connect(b, slow)

    let prefetchDone = 0
    const prefetch = Promise.all(cids.map(async (c, i) => {
      expect(same(await b.exchange.get(c, { priority: 'prefetch' }), blocks[i])).toBe(true)
      prefetchDone++
    }))
    await new Promise(resolve => setTimeout(resolve, 50)) // the burst is on the wire, the rest queued
    const t0 = Date.now()
    expect(same(await b.exchange.get(urgentCid), urgent)).toBe(true)
    const took = Date.now() - t0
    const doneWhenUrgentArrived = prefetchDone
    await prefetch
    // it went out at once (one block's time, not a prefetch request's wait first), and no
    // prefetch want queued when it was asked was answered before it: at most the 3 requests of 4
    // already in flight were
    expect(took).toBeLessThan(2 * DELAY)
    expect(doneWhenUrgentArrived).toBeLessThanOrEqual(3 * 4)
    const s = b.exchange.stats()
    expect(s).toMatchObject({ blocksReceived: count + 1, failedRequests: 0, backgroundRequests: 0, prefetchRequests: count / 4 })
    expect(s.requests).toBe(s.prefetchRequests + 1)
  })

  it('queues by priority: on-demand wants go first, then prefetch ones, then background ones (on an idle link); a want asked again more urgently moves up', async () => {
    const held = new Map<string, Uint8Array>()
    const served: string[] = []
    let open: () => void = () => {}
    const gate = new Promise<void>(resolve => { open = resolve })
    const blockers = new Set<string>()
    const server = await serverWith({
      get: async function * (c: CID) {
        const key = c.toString()
        served.push(key)
        if (blockers.has(key)) await gate
        yield held.get(key) as Uint8Array
      }
    })
    // 2 requests of 1 CID per peer, 1 of them kept for on-demand wants
    const b = await node({ exchange: { maxRequestsPerPeer: 2, demandReservedRequests: 1, maxCidsPerRequest: 1, requestCids: 1, backgroundRequestCids: 1 } })
    const named = async (): Promise<CID> => {
      const bytes = random(1000)
      const c = await rawBlock(bytes)
      held.set(c.toString(), bytes)
      return c
    }
    const [d0, p0, b1, b2, b3, p1, p2, p3, d1, d2] = await Promise.all(Array.from({ length: 10 }, named))
    blockers.add(d0.toString())
    blockers.add(p0.toString())
    await connect(b, server)
    const names = new Map([d0, p0, b1, b2, b3, p1, p2, p3, d1, d2].map((c, i) => [c.toString(), ['d0', 'p0', 'b1', 'b2', 'b3', 'p1', 'p2', 'p3', 'd1', 'd2'][i]]))

    // an on-demand and a prefetch request hold both slots (the server waits on them)
    const gets = [b.exchange.get(d0), b.exchange.get(p0, { priority: 'prefetch' })]
    await until(() => served.length === 2, 'both held requests at the server')
    // everything else queued in one tick, the least urgent first
    gets.push(...[b1, b2, b3].map(async c => await b.exchange.get(c, { priority: 'background' })))
    gets.push(...[p1, p2].map(async c => await b.exchange.get(c, { priority: 'prefetch' })))
    gets.push(b.exchange.get(p3, { priority: 'background' }), b.exchange.get(p3, { priority: 'prefetch' })) // moves up to prefetch
    gets.push(b.exchange.get(b3, { priority: 'background' })) // asked again at its own priority: stays
    gets.push(...[d1, d2].map(async c => await b.exchange.get(c)))
    await new Promise(resolve => setTimeout(resolve, 100))
    expect(served.length).toBe(2) // nothing else goes while both slots are held
    open()
    const got = await Promise.all(gets)
    expect(got.every(g => g != null)).toBe(true)
    const order = served.slice(2).map(k => names.get(k))
    // the two on-demand ones in either order (both slots), then the prefetch ones one at a time
    // (one slot is kept), then the background ones one at a time
    expect(new Set(order.slice(0, 2))).toEqual(new Set(['d1', 'd2']))
    expect(order.slice(2)).toEqual(['p1', 'p2', 'p3', 'b1', 'b2', 'b3'])
    expect(b.exchange.stats()).toMatchObject({ requests: 10, prefetchRequests: 4, backgroundRequests: 3 })
  })

  it('refuses a reserve that leaves prefetch no request', () => {
    const components = { libp2p: {} as unknown as BlockExchangeComponents['libp2p'], blockstore: { get: () => [] }, logger: silentLogger() }
    expect(() => new BlockExchange(components, { maxRequestsPerPeer: 4, demandReservedRequests: 4 })).toThrow(InvalidOptionError)
    expect(() => new BlockExchange(components, { maxRequestsPerPeer: 4, demandReservedRequests: 0 })).not.toThrow()
  })

  it('closes a stream carrying a malformed or oversized request and keeps serving others', async () => {
    const { a, b, cid, bytes } = await servingOneBlock()

    const answers = async (payload: Uint8Array): Promise<{ bytes: number, error?: string }> => {
      const stream = await b.helia.libp2p.dialProtocol(a.peerId, PROTOCOL)
      stream.send(payload)
      let n = 0
      try {
        for await (const chunk of stream) n += chunk.byteLength
      } catch (err) {
        return { bytes: n, error: (err as Error).name }
      }
      return { bytes: n }
    }
    // a length prefix of 10 MB (varint 0x80 0xad 0xe2 0x04), far over the request cap
    // each is answered with nothing and a reset stream (not a clean end the client could take for
    // "no blocks")
    const oversized = await answers(Uint8Array.of(0x80, 0xad, 0xe2, 0x04))
    expect(oversized).toEqual({ bytes: 0, error: 'StreamResetError' })
    // bytes that are not CIDs
    const garbage = await answers(frame(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])))
    expect(garbage).toEqual({ bytes: 0, error: 'StreamResetError' })
    // more CIDs than allowed
    const tooMany = await answers(frame(encodeRequest(Array.from({ length: 65 }, () => cid))))
    expect(tooMany).toEqual({ bytes: 0, error: 'StreamResetError' })
    await until(() => a.exchange.stats().rejectedRequests === 3, 'three rejected requests')
    // a length prefix that never ends (continuation bytes only): rejected once it is longer than
    // the largest request needs, not read for as long as the peer sends (nor until a timeout)
    const sentAt = Date.now()
    const endless = await answers(new Uint8Array(64).fill(0x80))
    expect(endless).toEqual({ bytes: 0, error: 'StreamResetError' })
    expect(Date.now() - sentAt).toBeLessThan(DEFAULTS.requestTimeout / 2) // a protocol error, not the first request's timeout
    await until(() => a.exchange.stats().rejectedRequests === 4, 'the endless prefix rejected')

    // the wire format: a hand-made request gets hand-checkable frames back (0x01 + block)
    const stream = await b.helia.libp2p.dialProtocol(a.peerId, PROTOCOL)
    const missing = await rawBlock(random(10))
    stream.send(frame(encodeRequest([cid, missing])))
    const want = Buffer.concat([frame(Buffer.concat([Uint8Array.of(1), bytes])), frame(Uint8Array.of(0))])
    const parts: Uint8Array[] = []
    let n = 0
    for await (const chunk of stream) {
      const c = chunk instanceof Uint8Array ? chunk : chunk.subarray()
      parts.push(c)
      n += c.byteLength
      if (n >= want.length) break
    }
    expect(Buffer.compare(Buffer.concat(parts), want)).toBe(0)
    await stream.close()

    const got = await b.exchange.get(cid)
    expect(same(got, bytes)).toBe(true)
  })

  it('answers ready wait for a slower disk read of the same request up to serveHoldBytes, then go out first', async () => {
    // a store whose reads of some blocks take 50 ms (a cold disk)
    const blocks = new Map<string, { bytes: Uint8Array, slow: boolean }>()
    const store: ExchangeBlockstore = {
      async * get (cid) {
        const b = blocks.get(cid.toString())
        if (b == null) throw new Error('not found')
        if (b.slow) await new Promise(resolve => setTimeout(resolve, 50))
        yield b.bytes
      }
    }
    const add = async (size: number, slow: boolean): Promise<{ cid: CID, bytes: Uint8Array }> => {
      const bytes = random(size)
      const cid = await rawBlock(bytes)
      blocks.set(cid.toString(), { bytes, slow })
      return { cid, bytes }
    }
    const a = await serverWith(store)
    const b = await node()
    await connect(b, a)
    const ask = async (wanted: Array<{ cid: CID, bytes: Uint8Array }>): Promise<void> => {
      // asked in one tick: one request
      const got = await Promise.all(wanted.map(async w => await b.exchange.get(w.cid)))
      wanted.forEach((w, i) => expect(same(got[i], w.bytes)).toBe(true))
    }
    const before = a.exchange.stats()
    // a small file's data and the next file's tar header: one write, though the second read is slow
    await ask([await add(3000, false), await add(130, true)])
    const small = a.exchange.stats()
    expect(small.servedRequests - before.servedRequests).toBe(1)
    expect(small.servedWrites - before.servedWrites).toBe(1)
    // past serveHoldBytes what is ready goes out before the slow read
    await ask([await add(DEFAULTS.serveHoldBytes + 1000, false), await add(130, true)])
    const big = a.exchange.stats()
    expect(big.servedRequests - small.servedRequests).toBe(1)
    expect(big.servedWrites - small.servedWrites).toBe(2)
  })

  it('a peer announcing a block over the size limit is dropped at once; the next peer answers', async () => {
    const bloated = await node({ listen: LISTEN, exchange: false })
    // answers every request with a frame header claiming 5 MiB (over the 4 MiB + 1 limit)
    await bloated.helia.libp2p.handle(PROTOCOL, async (stream) => {
      for await (const _ of stream) { stream.send(Uint8Array.of(0x80, 0x80, 0xc0, 0x02)); break }
      await new Promise(resolve => setTimeout(resolve, 3000))
    })
    const honest = await node({ listen: LISTEN })
    const b = await node({ exchange: { hedgeDelay: 3000, maxHedgeDelay: 3000, loadSpread: 0 } })
    // the bloated peer ranks above b for the block, the honest one below: the bloated one is asked first
    const { cid, bytes } = await blockWhere(c => ranksAbove(c, bloated.peerId.toString(), b.peerId.toString()) && ranksAbove(c, b.peerId.toString(), honest.peerId.toString()), 4000)
    await honest.localBlockstore.put(cid, bytes)
    await connect(b, bloated)
    await connect(b, honest)
    expect(b.exchange.peers()[0].equals(bloated.peerId)).toBe(true)
    const t0 = Date.now()
    expect(same(await b.exchange.get(cid), bytes)).toBe(true)
    expect(Date.now() - t0).toBeLessThan(1500)
    expect(b.exchange.stats()).toMatchObject({ failedRequests: 1, blocksReceived: 1, hedges: 0 })
  })

  it('reuses a stream for later requests, and replaces one the server closed while idle', async () => {
    const a = await node({ listen: LISTEN })
    const b = await node()
    const blocks = [random(3000), random(4000), random(5000)]
    const cids = await Promise.all(blocks.map(rawBlock))
    for (let i = 0; i < 3; i++) await a.localBlockstore.put(cids[i], blocks[i])
    await connect(b, a)
    const streams = (): number => b.helia.libp2p.getConnections(a.peerId).flatMap(c => c.streams).filter(s => s.protocol?.startsWith('/ipfs-estargz/blocks/') === true).length

    expect(same(await b.exchange.get(cids[0]), blocks[0])).toBe(true)
    expect(same(await b.exchange.get(cids[1]), blocks[1])).toBe(true)
    expect(streams()).toBe(1) // one pooled stream served both
    expect(a.exchange.stats().servedRequests).toBe(2)

    // the server side goes away and comes back: the idle stream is dead, a new one is used
    await a.exchange.stop()
    await a.exchange.start()
    await connect(b, a)
    expect(same(await b.exchange.get(cids[2]), blocks[2])).toBe(true)
    expect(b.exchange.stats().failedRequests).toBe(0)
  })

  it('closes idle streams by its own timeouts: the client a pooled one, the server one with no next request; later gets open a new one', async () => {
    const blocks = [random(3000), random(4000), random(5000)]
    const cids = await Promise.all(blocks.map(rawBlock))
    const streamsOf = (n: IpfsNode, peer: IpfsNode): number => n.helia.libp2p.getConnections(peer.peerId).flatMap(c => c.streams).filter(st => st.protocol?.startsWith('/ipfs-estargz/blocks/') === true).length
    // the client's timeout first
    {
      const a = await node({ listen: LISTEN })
      const b = await node({ exchange: { idleStreamTimeout: 300 } })
      for (let i = 0; i < 3; i++) await a.localBlockstore.put(cids[i], blocks[i])
      await connect(b, a)
      expect(same(await b.exchange.get(cids[0]), blocks[0])).toBe(true)
      expect(streamsOf(b, a)).toBe(1)
      await until(() => streamsOf(b, a) === 0 && streamsOf(a, b) === 0, 'the client to close its pooled stream, and the server its side')
      expect(b.exchange.stats().idleStreamsClosed).toBe(1)
      expect(same(await b.exchange.get(cids[1]), blocks[1])).toBe(true)
      expect(b.exchange.stats()).toMatchObject({ streamsOpened: 2, failedRequests: 0 })
    }
    // the server's, with a client that would keep the stream
    {
      const a = await node({ listen: LISTEN, exchange: { serveIdleTimeout: 300 } })
      const b = await node({ exchange: { idleStreamTimeout: 60_000 } })
      for (let i = 0; i < 3; i++) await a.localBlockstore.put(cids[i], blocks[i])
      await connect(b, a)
      expect(same(await b.exchange.get(cids[0]), blocks[0])).toBe(true)
      await until(() => a.exchange.stats().idleStreamsClosed === 1, 'the server to close the idle stream')
      expect(b.exchange.stats().idleStreamsClosed).toBe(0)
      // the client finds its pooled stream closed and opens another; no request fails
      expect(same(await b.exchange.get(cids[2]), blocks[2])).toBe(true)
      expect(b.exchange.stats()).toMatchObject({ streamsOpened: 2, failedRequests: 0 })
      expect(a.exchange.stats().servedRequests).toBe(2)
    }
  })

  it('skips CIDs it cannot check (not sha2-256, no validator given): bitswap handles those', async () => {
    const a = await node({ listen: LISTEN })
    const b = await node()
    await connect(b, a)
    const { identity } = await import('multiformats/hashes/identity')
    const cid = CID.createV1(raw.code, identity.digest(Uint8Array.of(1, 2, 3)))
    expect(await b.exchange.get(cid)).toBeUndefined()
    expect(b.exchange.stats().requests).toBe(0)
  })

  it('falls back (undefined) without hanging when the peer has stopped', async () => {
    const { a, b, cid } = await servingOneBlock()
    await a.stop()
    const t0 = Date.now()
    expect(await b.exchange.get(cid)).toBeUndefined()
    expect(Date.now() - t0).toBeLessThan(2000)
  })

  it('honours the abort signal while a peer is slow to answer', async () => {
    const bytes = random(5000)
    const cid = await rawBlock(bytes)
    const slow = await serverWith({
      get: async function * () { await new Promise(resolve => setTimeout(resolve, 1500)); yield bytes }
    })
    const b = await node()
    await connect(b, slow)
    const t0 = Date.now()
    await expect(b.exchange.get(cid, { signal: AbortSignal.timeout(100) })).rejects.toMatchObject({ code: 'ABORT_ERR' })
    expect(Date.now() - t0).toBeLessThan(1000)
    // a later get without a deadline still works (and the stopped exchange answers undefined)
    expect(same(await b.exchange.get(cid), bytes)).toBe(true)
    await b.exchange.stop()
    expect(await b.exchange.get(cid)).toBeUndefined()
  })
})
