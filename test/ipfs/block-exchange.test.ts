import { afterAll, describe, expect, it } from 'vitest'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { BlockExchange, encodeRequest, encodeVarint, PROTOCOL, type ExchangeBlockstore } from '../../src/ipfs/block-exchange.js'
import { collectBlock } from '../../src/ipfs/dag-reader.js'
import { importBytes } from '../../src/ipfs/import.js'
import { createNode, type IpfsNode, type NodeOptions } from '../../src/ipfs/node.js'
import { silentLogger } from '../../src/logging.js'
import { TempRepos, leafMap, random } from './helpers.js'

const repos = new TempRepos()
const started: Array<{ stop: () => Promise<void> }> = []
afterAll(async () => {
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

async function until (cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}

/** Connects `from` to `to` and waits until `from`'s exchange knows `to` speaks the protocol. */
async function connect (from: IpfsNode, to: IpfsNode): Promise<void> {
  await from.dial(to.multiaddrs()[0])
  await until(() => from.exchange.peers().some(p => p.equals(to.peerId)), 'identify')
}

async function rawBlock (bytes: Uint8Array): Promise<CID> {
  return CID.createV1(raw.code, await sha256.digest(bytes))
}

/** Node A (listening) holding one 5000-byte block, node B connected to it. */
async function servingOneBlock (): Promise<{ a: IpfsNode, b: IpfsNode, cid: CID, bytes: Uint8Array }> {
  const a = await node({ listen: LISTEN })
  const b = await node()
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

describe('BlockExchange over loopback TCP', () => {
  it('fetches several leaves in one request, verified, then stored locally', async () => {
    const a = await node({ listen: LISTEN })
    const b = await node()
    const data = random(3 * MiB + 100)
    const { cid } = await importBytes(a.localBlockstore, data)
    const leaves = await leafMap(async (c) => await collectBlock(a.localBlockstore.get(c)), cid)
    await connect(b, a)

    const got = await Promise.all(leaves.map(async (l) => await b.exchange.get(l.cid)))
    await b.exchange.stored()
    for (let i = 0; i < leaves.length; i++) {
      expect(Buffer.compare(Buffer.from(got[i] ?? []), data.subarray(leaves[i].offset, leaves[i].offset + leaves[i].size))).toBe(0)
      expect(await b.localBlockstore.has(leaves[i].cid)).toBe(true)
    }
    const s = b.exchange.stats()
    expect(s).toMatchObject({ requests: 1, blocksReceived: 4, bytesReceived: data.length, badBlocks: 0, failedRequests: 0 })
    expect(a.exchange.stats()).toMatchObject({ servedRequests: 1, servedBlocks: 4, servedBytes: data.length })
  })

  it('answers undefined promptly for a CID no peer has; the server never fetches it itself', async () => {
    const a = await node({ listen: LISTEN })
    const b = await node()
    const c = await node({ listen: LISTEN })
    const bytes = random(1000)
    const onlyOnC = await rawBlock(bytes)
    await c.localBlockstore.put(onlyOnC, bytes)
    await a.dial(c.multiaddrs()[0]) // a could fetch it from c over bitswap: it must not
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

  it('rejects a block that does not match its CID, skips that peer, takes it from the next', async () => {
    const bytes = random(64 * 1024)
    const cid = await rawBlock(bytes)
    const lies = Buffer.from(bytes)
    lies[100] ^= 0xff
    const liar = await serverWith({
      get: () => [lies],
      put: async () => {}
    })
    const honest = await node({ listen: LISTEN })
    await honest.localBlockstore.put(cid, bytes)
    const b = await node()

    await connect(b, liar)
    expect(await b.exchange.get(cid)).toBeUndefined()
    expect(b.exchange.stats()).toMatchObject({ badBlocks: 1, blocksReceived: 0 })
    expect(await b.localBlockstore.has(cid)).toBe(false)
    expect(b.exchange.peers()).toEqual([]) // the liar is not asked again

    await connect(b, honest)
    const got = await b.exchange.get(cid)
    expect(Buffer.compare(Buffer.from(got ?? []), bytes)).toBe(0)
    await b.exchange.stored()
    expect(await b.localBlockstore.has(cid)).toBe(true)
    expect(liar.exchange.stats().servedRequests).toBe(1)
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
    // a length prefix of 10 MB, far over the request cap
    const oversized = await answers(encodeVarint(10_000_000))
    expect(oversized.bytes).toBe(0)
    expect(oversized.error).toBeDefined()
    // bytes that are not CIDs
    const garbage = await answers(Buffer.concat([encodeVarint(5), Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])]))
    expect(garbage.bytes).toBe(0)
    // more CIDs than allowed
    const tooMany = await answers(encodeRequest(Array.from({ length: 65 }, () => cid)))
    expect(tooMany.bytes).toBe(0)
    await until(() => a.exchange.stats().rejectedRequests === 3, 'three rejected requests')

    const got = await b.exchange.get(cid)
    expect(Buffer.compare(Buffer.from(got ?? []), bytes)).toBe(0)
  })

  it('reuses a stream for later requests, and replaces one the server closed while idle', async () => {
    const a = await node({ listen: LISTEN })
    const b = await node()
    const blocks = [random(3000), random(4000), random(5000)]
    const cids = await Promise.all(blocks.map(rawBlock))
    for (let i = 0; i < 3; i++) await a.localBlockstore.put(cids[i], blocks[i])
    await connect(b, a)
    const streams = (): number => b.helia.libp2p.getConnections(a.peerId).flatMap(c => c.streams).filter(s => s.protocol === PROTOCOL).length

    expect(Buffer.compare(Buffer.from(await b.exchange.get(cids[0]) ?? []), blocks[0])).toBe(0)
    expect(Buffer.compare(Buffer.from(await b.exchange.get(cids[1]) ?? []), blocks[1])).toBe(0)
    expect(streams()).toBe(1) // one pooled stream served both
    expect(a.exchange.stats().servedRequests).toBe(2)

    // the server side goes away and comes back: the idle stream is dead, a new one is used
    await a.exchange.stop()
    await a.exchange.start()
    await connect(b, a)
    expect(Buffer.compare(Buffer.from(await b.exchange.get(cids[2]) ?? []), blocks[2])).toBe(0)
    expect(b.exchange.stats().failedRequests).toBe(0)
  })

  it('skips CIDs whose hash is not sha2-256 (bitswap handles those)', async () => {
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
      get: async function * () { await new Promise(resolve => setTimeout(resolve, 1500)); yield bytes },
      put: async () => {}
    })
    const b = await node()
    await connect(b, slow)
    const t0 = Date.now()
    await expect(b.exchange.get(cid, { signal: AbortSignal.timeout(100) })).rejects.toMatchObject({ code: 'ABORT_ERR' })
    expect(Date.now() - t0).toBeLessThan(1000)
    // a later get without a deadline still works (and the stopped exchange answers undefined)
    expect(Buffer.compare(Buffer.from(await b.exchange.get(cid) ?? []), bytes)).toBe(0)
    await b.exchange.stop()
    expect(await b.exchange.get(cid)).toBeUndefined()
  })
})
