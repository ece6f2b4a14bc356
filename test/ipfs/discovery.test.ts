import { afterAll, describe, expect, it } from 'vitest'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { collectBlock } from '../../src/ipfs/dag-reader.js'
import { Discovery } from '../../src/ipfs/discovery.js'
import { InvalidOptionError } from '../../src/ipfs/errors.js'
import { createNode, type IpfsNode, type NodeOptions } from '../../src/ipfs/node.js'
import { silentLogger } from '../../src/logging.js'
import { TempRepos, random, until } from './helpers.js'

/**
 * The LAN DHT on loopback (mDNS is tested in network namespaces only: test/e2e/cluster.test.ts):
 * a node provides what it holds, another that knows neither it nor its address finds it through
 * a common bootstrap peer, connects before reading, and reads the block from it.
 */

const repos = new TempRepos()
const started: IpfsNode[] = []
afterAll(async () => {
  for (const n of started.reverse()) await n.stop().catch(() => {})
  await repos.cleanup()
})

const LISTEN = ['/ip4/127.0.0.1/tcp/0']

async function node (opts: Partial<NodeOptions> = {}): Promise<IpfsNode> {
  const n = await createNode({ repo: await repos.dir(), listen: LISTEN, logger: silentLogger(), inboundConnectionsPerSec: 1000, ...opts })
  started.push(n)
  return n
}

describe('discovery: the LAN DHT', () => {
  it('a node finds the provider of a block through the DHT, connects before reading and reads it from there', async () => {
    const seed = await node({ discovery: { dht: true } })
    const seedAddr = seed.multiaddrs()[0].toString()
    const holder = await node({ discovery: { dht: true, bootstrap: [seedAddr] } })
    const reader = await node({ discovery: { dht: true, bootstrap: [seedAddr], lookupTimeoutMs: 10_000 } })
    const bytes = random(10_000)
    const cid = CID.createV1(raw.code, await sha256.digest(bytes))
    await holder.localBlockstore.put(cid, bytes)
    const connected = (n: IpfsNode, to: IpfsNode): boolean => n.helia.libp2p.getConnections().some(c => c.remotePeer.equals(to.peerId))
    await until(() => connected(holder, seed) && connected(reader, seed), 'bootstrap', 10_000)
    await holder.discovery.provide([cid])
    expect(holder.discovery.stats()).toMatchObject({ provided: 1, provideFailures: 0 })
    await holder.discovery.provide([cid]) // once per run
    expect(holder.discovery.stats().provided).toBe(1)

    // the reader and the holder may already have met through the DHT's own queries: start apart
    await reader.helia.libp2p.hangUp(holder.peerId).catch(() => {})
    expect(await reader.discovery.connectProviders(cid)).toBe(1)
    expect(connected(reader, holder)).toBe(true)
    expect(reader.discovery.stats()).toMatchObject({ lookups: 1, lookupMisses: 0 })
    await until(() => reader.exchange.peers().some(p => p.equals(holder.peerId)), 'identify')
    const got = await collectBlock(reader.blocks.get(cid, { signal: AbortSignal.timeout(10_000) }))
    expect(Buffer.compare(Buffer.from(got), bytes)).toBe(0)
    expect(reader.exchange.peerStats()[holder.peerId.toString()]?.bytesReceived).toBe(bytes.length)
  }, 60_000)

  it('finding nobody is a counted miss within the lookup timeout, not an error; without the DHT nothing is asked', async () => {
    const seed = await node({ discovery: { dht: true } })
    const reader = await node({ discovery: { dht: true, bootstrap: [seed.multiaddrs()[0].toString()], lookupTimeoutMs: 1_500 } })
    await until(() => reader.helia.libp2p.getConnections().length > 0, 'bootstrap', 10_000)
    const cid = CID.createV1(raw.code, await sha256.digest(random(100)))
    const t0 = Date.now()
    expect(await reader.discovery.connectProviders(cid)).toBe(0)
    expect(Date.now() - t0).toBeLessThan(5_000)
    expect(reader.discovery.stats()).toMatchObject({ lookups: 1, lookupMisses: 1 })

    const plain = await node()
    expect(plain.discovery.dhtEnabled).toBe(false)
    expect(await plain.discovery.connectProviders(cid)).toBe(0)
    await plain.discovery.provide([cid])
    expect(plain.discovery.stats()).toMatchObject({ lookups: 0, provided: 0 })
  }, 60_000)

  it('refuses out-of-range limits', () => {
    const libp2p = {} as ConstructorParameters<typeof Discovery>[0]['libp2p']
    expect(() => new Discovery({ libp2p, logger: silentLogger() }, { lookupTimeoutMs: 0 })).toThrow(InvalidOptionError)
    expect(() => new Discovery({ libp2p, logger: silentLogger() }, { maxPeers: 1.5 })).toThrow(InvalidOptionError)
  })
})
