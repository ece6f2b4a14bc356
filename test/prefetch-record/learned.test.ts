import { Writable } from 'node:stream'
import { stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { CID } from 'multiformats/cid'
import { BlockExchange } from '../../src/ipfs/block-exchange.js'
import { collectBlock } from '../../src/ipfs/dag-reader.js'
import { importBytes } from '../../src/ipfs/import.js'
import { createNode, type IpfsNode, type NodeOptions } from '../../src/ipfs/node.js'
import { silentLogger, type Logger } from '../../src/logging.js'
import { KnownRecords } from '../../src/prefetch-record/known.js'
import { LearnedPrefetch, type LearnedPrefetchComponents, type LearnedPrefetchOptions } from '../../src/prefetch-record/learned.js'
import { RecordProtocol } from '../../src/prefetch-record/protocol.js'
import { encodeRecord, recordCid } from '../../src/prefetch-record/record.js'
import { IpfsSource } from '../../src/source/ipfs.js'
import { TempRepos, leafMap, random, until } from '../ipfs/helpers.js'

const repos = new TempRepos()
const started: Array<{ stop: () => Promise<void> }> = []
afterAll(async () => {
  for (const s of started.reverse()) await s.stop().catch(() => {})
  await repos.cleanup()
})

const LISTEN = ['/ip4/127.0.0.1/tcp/0']

async function node (opts: Partial<NodeOptions> = {}): Promise<IpfsNode> {
  // every node here dials from 127.0.0.1, so they share one host's inbound limit
  const n = await createNode({ repo: await repos.dir(), logger: silentLogger(), listen: LISTEN, inboundConnectionsPerSec: 1000, ...opts })
  started.push(n)
  return n
}

/** A logger whose lines are kept (parsed) for the test to look at. */
function capture (): { logger: Logger, lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const sink = new Writable({ write (chunk: Buffer, _enc, cb) { for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l)); cb() } })
  return { logger: pino({ level: 'debug' }, sink), lines }
}

async function learner (n: IpfsNode, options: LearnedPrefetchOptions = {}, logger: Logger = silentLogger(), handOff?: LearnedPrefetchComponents['handOff']): Promise<LearnedPrefetch> {
  const l = new LearnedPrefetch({ logger, blocks: n.blocks, localBlockstore: n.localBlockstore, libp2p: n.helia.libp2p, handOff }, options)
  await l.start()
  started.push(l)
  return l
}

/** Every CID the node's local blockstore hands out from now on (what its block exchange serves), in order. */
function servedBy (n: IpfsNode): string[] {
  const served: string[] = []
  const store = n.localBlockstore
  const get = store.get.bind(store)
  store.get = ((cid: CID, options?: unknown) => { served.push(cid.toString()); return get(cid, options as never) }) as typeof store.get
  return served
}

/** A peer that answers `lookup` for every layer with `pointer` and serves `block` (a record's bytes, or lies) for its CID. */
async function recordPeer (pointer: { record: CID, created: number }, block: Uint8Array): Promise<IpfsNode> {
  const n = await node({ exchange: false })
  const ex = new BlockExchange({ libp2p: n.helia.libp2p, blockstore: { get: (c: CID) => { if (!c.equals(pointer.record)) throw new Error('no'); return [block] } }, logger: silentLogger() })
  await ex.start()
  started.push(ex)
  const p = new RecordProtocol({ libp2p: n.helia.libp2p, lookup: async () => pointer, logger: silentLogger() })
  await p.start()
  started.push(p)
  return n
}

describe('learned prefetch between real nodes', () => {
  let a: IpfsNode
  let layer: CID
  let size: number
  let leaves: Array<{ offset: number, size: number, cid: CID }>
  /** Leaves in the order node B reads them. */
  const ORDER = [9, 3, 12, 0, 6]

  beforeAll(async () => {
    a = await node()
    const data = random(4 << 20)
    size = data.length
    layer = (await importBytes(a.localBlockstore, data, { kuboCompatible: true })).cid // 256 KiB leaves
    leaves = await leafMap(async (c) => await collectBlock(a.localBlockstore.get(c)), layer)
    expect(leaves).toHaveLength(16)
  })

  /** Node B reads `order`'s leaves of the layer from A on demand, through the learned prefetch's hook; its record is published. */
  async function recordOn (order: number[]): Promise<{ b: IpfsNode, learned: LearnedPrefetch }> {
    const b = await node()
    await b.dial(a.multiaddrs()[0])
    const learned = await learner(b, { recorder: { minRanges: 1 } })
    const source = await IpfsSource.open(b.blocks, layer)
    for (const i of order) {
      const done = learned.onRead(layer.toString(), leaves[i].offset + 10, 1000)
      await source.read(leaves[i].offset + 10, 1000)
      done()
    }
    learned.layerUnmounted(layer.toString())
    await until(() => learned.stats().recordsPublished === 1, 'the record published')
    return { b, learned }
  }

  it('B records and publishes; C fetches B\'s record and prefetches its ranges in record order, seen at the source; then C serves the record too', async () => {
    const { b } = await recordOn(ORDER)
    // B keeps the record but not the layer's blocks: they must come from A, in the record's order
    await b.flush()
    for (const l of leaves) await b.localBlockstore.delete(l.cid)
    const served = servedBy(a)
    const c = await node()
    await c.dial(a.multiaddrs()[0])
    await c.dial(b.multiaddrs()[0])
    const log = capture()
    const learned = await learner(c, { prefetch: { concurrency: 1 } }, log.logger)
    await learned.learn(layer.toString())

    const leafOrder = served.map(s => leaves.findIndex(l => l.cid.toString() === s)).filter(i => i >= 0)
    expect(leafOrder).toEqual(ORDER)
    for (const [i, l] of leaves.entries()) expect(await c.localBlockstore.has(l.cid), `leaf ${i}`).toBe(ORDER.includes(i))
    expect(learned.stats()).toMatchObject({ recordsFetched: 1, recordsUsed: 1, recordsRejected: 0, prefetchedPieces: 5, prefetchedBytes: 5000, prefetchedNetworkBytes: 5 * 256 * 1024 })
    // the leaves went at prefetch priority (behind on-demand wants), one piece at a time
    expect(c.exchange.stats().prefetchRequests).toBeGreaterThanOrEqual(5)
    const line = log.lines.find(l => l.msg === 'prefetched a layer in a learned order')
    expect(line).toMatchObject({ layer: layer.toString(), from: b.peerId.toString(), ranges: 5, pieces: '5/5' })

    // D, connected to C only, gets the same record from C: records spread
    const d = await node()
    await d.dial(c.multiaddrs()[0])
    const dLog = capture()
    const dLearned = await learner(d, {}, dLog.logger)
    await dLearned.learn(layer.toString())
    expect(dLearned.stats()).toMatchObject({ recordsFetched: 1, recordsUsed: 1 })
    expect(dLog.lines.find(l => l.msg === 'prefetched a layer in a learned order')).toMatchObject({ from: c.peerId.toString(), record: line?.record })
  })

  it('ranges the mounts\' cache takes are handed off; ranges it refuses are a counted warning, and prefetched into the blockstore instead', async () => {
    const { b } = await recordOn([4, 8, 2])
    const taken = await node()
    await taken.dial(a.multiaddrs()[0])
    await taken.dial(b.multiaddrs()[0])
    const handed: Array<Array<[number, number]>> = []
    const takes = await learner(taken, {}, silentLogger(), async (_layer, ranges) => { handed.push(ranges); return true })
    await takes.learn(layer.toString())
    expect(takes.stats()).toMatchObject({ recordsUsed: 1, handedOff: 1, handOffFallbacks: 0, prefetchedPieces: 0 })
    expect(handed).toHaveLength(1)
    for (const l of leaves) expect(await taken.localBlockstore.has(l.cid)).toBe(false) // the mounts' cache fetches them, not this

    const refused = await node()
    await refused.dial(a.multiaddrs()[0])
    await refused.dial(b.multiaddrs()[0])
    const log = capture()
    const refuses = await learner(refused, {}, log.logger, async () => false)
    await refuses.learn(layer.toString())
    expect(refuses.stats()).toMatchObject({ recordsUsed: 1, handedOff: 0, handOffFallbacks: 1 })
    expect(log.lines.find(l => l.msg === 'learned order not taken by the mounts\' cache: prefetching it into the blockstore instead')).toMatchObject({ level: 40, layer: layer.toString() })
    for (const i of [4, 8, 2]) expect(await refused.localBlockstore.has(leaves[i].cid), `leaf ${i}`).toBe(true)
  })

  it('the newest record wins: C prefetches in the order of the record made last', async () => {
    const first = await recordOn([1, 2, 3])
    await new Promise(resolve => setTimeout(resolve, 5))
    const second = await recordOn([15, 14, 13])
    const c = await node()
    for (const n of [a, first.b, second.b]) await c.dial(n.multiaddrs()[0])
    const log = capture()
    const learned = await learner(c, { prefetch: { concurrency: 1 } }, log.logger)
    await learned.learn(layer.toString())
    expect(log.lines.find(l => l.msg === 'prefetched a layer in a learned order')).toMatchObject({ from: second.b.peerId.toString() })
    // C holds the newest record's leaves, not the older one's
    const fetched = leaves.map((_, i) => i).filter(i => [15, 14, 13, 1, 2, 3].includes(i))
    for (const i of fetched) expect(await c.localBlockstore.has(leaves[i].cid), `leaf ${i}`).toBe([15, 14, 13].includes(i))
  })

  it('waits while an on-demand read is in flight, then goes on', async () => {
    const { b } = await recordOn([4, 5])
    const c = await node()
    await c.dial(a.multiaddrs()[0])
    await c.dial(b.multiaddrs()[0])
    const learned = await learner(c)
    const done = learned.onRead('bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy', 0, 10) // a container's read, slow
    const learning = learned.learn(layer.toString())
    await new Promise(resolve => setTimeout(resolve, 500))
    expect(learned.stats()).toMatchObject({ recordsUsed: 1, prefetchedPieces: 0 })
    expect(await c.localBlockstore.has(leaves[4].cid)).toBe(false)
    done()
    await learning
    expect(learned.stats().prefetchedPieces).toBe(2)
    expect(await c.localBlockstore.has(leaves[4].cid)).toBe(true)
  })

  const hostile: Array<[string, (now: number) => { doc: unknown, created: number, raw?: Uint8Array }, RegExp]> = [
    ['names ranges past the end of the layer', (now) => ({ doc: { v: 1, layer: layer.toString(), size, created: now, ranges: [[0, 10], [size - 5, 100]] }, created: now }), /ends past the layer/],
    ['is not JSON', (now) => ({ doc: undefined, raw: Buffer.from('{"v":1, "ranges": [[0,'), created: now }), /not JSON/],
    ['is huge', (now) => ({ doc: undefined, raw: Buffer.from(JSON.stringify({ v: 1, layer: layer.toString(), size, created: now, ranges: [[0, 1]], pad: 'x'.repeat(200_000) })), created: now }), /more than 131072/],
    ['is for another layer', (now) => ({ doc: { v: 1, layer: 'bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy', size, created: now, ranges: [[0, 10]] }, created: now }), /made for layer/],
    ['was announced newer than it is', (now) => ({ doc: { v: 1, layer: layer.toString(), size, created: now - 60_000, ranges: [[0, 10]] }, created: now }), /announced as made at/]
  ]
  for (const [what, make, message] of hostile) {
    it(`a record that ${what} is ignored with a warning; nothing is prefetched`, async () => {
      const { doc, created, raw } = make(Date.now())
      const bytes = raw ?? Buffer.from(JSON.stringify(doc))
      const evil = await recordPeer({ record: recordCid(bytes), created }, bytes)
      const served = servedBy(a)
      const c = await node()
      await c.dial(a.multiaddrs()[0])
      await c.dial(evil.multiaddrs()[0])
      const log = capture()
      const learned = await learner(c, {}, log.logger)
      await learned.learn(layer.toString())
      expect(learned.stats()).toMatchObject({ recordsRejected: 1, recordsUsed: 0, recordsFetched: 0, prefetchedPieces: 0, prefetchedBytes: 0 })
      const warning = log.lines.find(l => l.msg === 'ignoring a prefetch record')
      expect(warning).toMatchObject({ level: 40, peer: evil.peerId.toString() })
      expect(String(warning?.err)).toMatch(message)
      expect(served.filter(s => leaves.some(l => l.cid.toString() === s))).toEqual([]) // no leaf asked of A
      for (const l of leaves) expect(await c.localBlockstore.has(l.cid)).toBe(false)
      // C does not hand the record on
      const probe = await node()
      const p = new RecordProtocol({ libp2p: probe.helia.libp2p, lookup: async () => undefined, logger: silentLogger() })
      await p.start()
      started.push(p)
      await probe.dial(c.multiaddrs()[0])
      expect(await p.ask(layer)).toEqual([])
      expect(p.stats()).toMatchObject({ peersAsked: 1, noneAnswers: 1 })
    })
  }

  it('a lying peer\'s record (bytes that do not match its CID) is rejected; nothing is prefetched', async () => {
    const now = Date.now()
    const { cid, bytes } = encodeRecord({ layer: layer.toString(), size, created: now, ranges: [[0, 10], [1 << 20, 10]] })
    const lies = Buffer.from(bytes)
    lies[lies.length - 3] ^= 1
    const liar = await recordPeer({ record: cid, created: now }, lies)
    const served = servedBy(a)
    const c = await node()
    await c.dial(a.multiaddrs()[0])
    await c.dial(liar.multiaddrs()[0])
    const log = capture()
    const learned = await learner(c, { recordFetchTimeoutMs: 1000 }, log.logger)
    await learned.learn(layer.toString())
    expect(learned.stats()).toMatchObject({ recordsRejected: 1, recordsUsed: 0, prefetchedPieces: 0 })
    expect(c.exchange.stats().badBlocks).toBe(1) // the fetch path saw the bytes did not match
    expect(log.lines.find(l => l.msg === 'ignoring a prefetch record')).toMatchObject({ level: 40, record: cid.toString() })
    expect(await c.localBlockstore.has(cid)).toBe(false)
    expect(served.filter(s => leaves.some(l => l.cid.toString() === s))).toEqual([])
  })

  it('without any record the layer is left to on-demand reads', async () => {
    const c = await node()
    await c.dial(a.multiaddrs()[0])
    const learned = await learner(c)
    const t0 = Date.now()
    await learned.learn(layer.toString())
    expect(Date.now() - t0).toBeLessThan(1500)
    expect(learned.stats()).toMatchObject({ layersWithoutRecord: 1, recordsUsed: 0, prefetchedPieces: 0 })
  })
})

describe('KnownRecords', () => {
  it('keeps the newest record per layer, persists it privately, and ignores a bad file', async () => {
    const dir = await repos.scratch()
    const file = join(dir, 'known.json')
    const r = (n: number): CID => recordCid(Buffer.from(String(n)))
    const L1 = r(100).toString() // any CID names a layer here
    const known = new KnownRecords({ logger: silentLogger() }, { file })
    expect(known.offer(L1, { record: r(1), created: 100, own: true })).toBe(true)
    expect(known.offer(L1, { record: r(2), created: 50, own: false })).toBe(false) // older
    expect(known.offer(L1, { record: r(3), created: 200, own: false })).toBe(true)
    expect(known.offer(L1, { record: r(3), created: 200, own: false })).toBe(false) // the same
    await known.flush()
    const again = new KnownRecords({ logger: silentLogger() }, { file })
    await again.load()
    expect(again.get(L1)).toMatchObject({ created: 200, own: false })
    expect(again.get(L1)?.record.equals(r(3))).toBe(true)
    expect((await stat(file)).mode & 0o777).toBe(0o600)

    await writeFile(file, '{"L1": {"record": "not a cid", "created": 1}, "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy": {"record": 5}}')
    const bad = new KnownRecords({ logger: silentLogger() }, { file })
    await bad.load()
    expect(bad.size).toBe(0)
    await writeFile(file, 'garbage')
    await bad.load()
    expect(bad.size).toBe(0)
  })

  it('remembers at most maxLayers layers, dropping the one updated longest ago', () => {
    const known = new KnownRecords({ logger: silentLogger() }, { maxLayers: 2 })
    const r = recordCid(Buffer.from('x'))
    known.offer('A', { record: r, created: 1, own: true })
    known.offer('B', { record: r, created: 1, own: true })
    known.offer('C', { record: r, created: 1, own: true })
    expect(known.get('A')).toBeUndefined()
    expect(known.size).toBe(2)
  })
})
