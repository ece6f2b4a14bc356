import { afterAll, describe, expect, it } from 'vitest'
import { CID } from 'multiformats/cid'
import * as dagPb from '@ipld/dag-pb'
import { createNode, type IpfsNode, type NodeOptions } from '../../src/ipfs/node.js'
import { silentLogger } from '../../src/logging.js'
import { PrefetchRecordProtocolError } from '../../src/prefetch-record/errors.js'
import { decodeAnswer, encodeAnswer, PROTOCOL, RecordProtocol, type RecordPointer, type RecordProtocolOptions } from '../../src/prefetch-record/protocol.js'
import { recordCid } from '../../src/prefetch-record/record.js'
import { TempRepos, until } from '../ipfs/helpers.js'

const repos = new TempRepos()
const started: Array<{ stop: () => Promise<void> }> = []
const releases: Array<() => void> = []
afterAll(async () => {
  for (const r of releases) r()
  for (const s of started.reverse()) await s.stop().catch(() => {})
  await repos.cleanup()
})

const LISTEN = ['/ip4/127.0.0.1/tcp/0']
const LAYER = CID.parse('bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi')
const rec = (n: number): CID => recordCid(Buffer.from(`record ${n}`))

async function node (opts: Partial<NodeOptions> = {}): Promise<IpfsNode> {
  const n = await createNode({ repo: await repos.dir(), logger: silentLogger(), exchange: false, ...opts })
  started.push(n)
  return n
}

/** A node serving records through `lookup` (the protocol registered before anyone connects). */
async function server (lookup: (layer: CID) => Promise<RecordPointer | undefined>, options: RecordProtocolOptions = {}): Promise<{ n: IpfsNode, p: RecordProtocol }> {
  const n = await node({ listen: LISTEN })
  const p = new RecordProtocol({ libp2p: n.helia.libp2p, lookup, logger: silentLogger() }, options)
  await p.start()
  started.push(p)
  return { n, p }
}

async function client (options: RecordProtocolOptions = {}): Promise<{ n: IpfsNode, p: RecordProtocol }> {
  const n = await node()
  const p = new RecordProtocol({ libp2p: n.helia.libp2p, lookup: async () => undefined, logger: silentLogger() }, options)
  await p.start()
  started.push(p)
  return { n, p }
}

/** A length-prefixed frame, written by hand. */
function frame (body: Uint8Array): Uint8Array {
  const len: number[] = []
  let n = body.length
  while (n >= 0x80) { len.push((n & 0x7f) | 0x80); n >>>= 7 }
  len.push(n)
  return Buffer.concat([Uint8Array.from(len), body])
}

describe('the prefetch-record wire format', () => {
  it('encodes none and a pointer, and decodes only well-formed answers', () => {
    expect(encodeAnswer(undefined)).toEqual(Uint8Array.of(0))
    expect(decodeAnswer(Uint8Array.of(0))).toBeUndefined()
    const pointer = { record: rec(1), created: 1_700_000_000_123 }
    const bytes = encodeAnswer(pointer)
    expect(bytes.length).toBe(1 + rec(1).bytes.length + 8)
    const back = decodeAnswer(bytes)
    expect(back?.record.equals(pointer.record)).toBe(true)
    expect(back?.created).toBe(pointer.created)
    const bad: Array<[string, Uint8Array]> = [
      ['empty', new Uint8Array(0)],
      ['unknown status', Uint8Array.of(7)],
      ['none with trailing bytes', Uint8Array.of(0, 0)],
      ['a cut CID', bytes.subarray(0, 10)],
      ['a short time', bytes.subarray(0, bytes.length - 1)],
      ['a long time', Buffer.concat([bytes, Uint8Array.of(0)])],
      ['a time past 2^53', Buffer.concat([Uint8Array.of(1), rec(1).bytes, Buffer.alloc(8, 0xff)])],
      ['a record CID that is not raw sha2-256', Buffer.concat([Uint8Array.of(1), CID.createV1(dagPb.code, rec(1).multihash).bytes, Buffer.alloc(8)])]
    ]
    for (const [what, body] of bad) expect(() => decodeAnswer(body), what).toThrow(PrefetchRecordProtocolError)
  })
})

describe('RecordProtocol over loopback TCP', () => {
  it('asks every peer at once; the answers come back newest first; a peer without a record is left out', async () => {
    const older = await server(async (l) => l.equals(LAYER) ? { record: rec(1), created: 1000 } : undefined)
    const newer = await server(async (l) => l.equals(LAYER) ? { record: rec(2), created: 2000 } : undefined)
    const none = await server(async () => undefined)
    const c = await client()
    for (const s of [older, none, newer]) await c.n.dial(s.n.multiaddrs()[0])
    const answers = await c.p.ask(LAYER)
    expect(answers.map(a => [a.record.toString(), a.created, a.peer.toString()])).toEqual([
      [rec(2).toString(), 2000, newer.n.peerId.toString()],
      [rec(1).toString(), 1000, older.n.peerId.toString()]
    ])
    expect(c.p.stats()).toMatchObject({ asks: 1, peersAsked: 3, answers: 2, noneAnswers: 1, failedAnswers: 0 })
    expect(older.p.stats()).toMatchObject({ served: 1 })
    expect(none.p.stats()).toMatchObject({ servedNone: 1 })
    // another layer: nobody has one
    expect(await c.p.ask(CID.parse('bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy'))).toEqual([])
  })

  it('asks a peer that started serving records after it was identified, and skips peers that do not speak it', async () => {
    const late = await node({ listen: LISTEN })
    const plain = await node({ listen: LISTEN })
    const c = await client()
    await c.n.dial(late.multiaddrs()[0])
    await c.n.dial(plain.multiaddrs()[0])
    await new Promise(resolve => setTimeout(resolve, 200)) // identified without the protocol
    const p = new RecordProtocol({ libp2p: late.helia.libp2p, lookup: async () => ({ record: rec(3), created: 3 }), logger: silentLogger() })
    await p.start()
    started.push(p)
    const answers = await c.p.ask(LAYER)
    expect(answers.map(a => a.peer.toString())).toEqual([late.peerId.toString()])
    expect(c.p.stats()).toMatchObject({ peersAsked: 2, answers: 1, failedAnswers: 1, badAnswers: 0 })
  })

  it('a silent peer costs the ask deadline, not more', async () => {
    const silent = await node({ listen: LISTEN })
    const hold = new Promise<void>(resolve => releases.push(resolve))
    await silent.helia.libp2p.handle(PROTOCOL, async () => { await hold })
    const honest = await server(async () => ({ record: rec(4), created: 4 }))
    const c = await client({ askTimeoutMs: 300 })
    await c.n.dial(silent.multiaddrs()[0])
    await c.n.dial(honest.n.multiaddrs()[0])
    const t0 = Date.now()
    const answers = await c.p.ask(LAYER)
    const took = Date.now() - t0
    expect(answers.map(a => a.peer.toString())).toEqual([honest.n.peerId.toString()])
    expect(took).toBeGreaterThanOrEqual(290)
    expect(took).toBeLessThan(1000)
    expect(c.p.stats()).toMatchObject({ failedAnswers: 1, badAnswers: 0 })
  })

  it('a peer answering an oversized or malformed frame is refused and not asked again', async () => {
    // claims a 5 MiB answer: over the client's frame cap
    const bloated = await node({ listen: LISTEN })
    await bloated.helia.libp2p.handle(PROTOCOL, async (stream) => {
      for await (const _ of stream) { stream.send(Uint8Array.of(0x80, 0x80, 0xc0, 0x02)); break }
      await new Promise(resolve => setTimeout(resolve, 2000))
    })
    // a well-framed answer with a bad status
    const garbled = await node({ listen: LISTEN })
    await garbled.helia.libp2p.handle(PROTOCOL, async (stream) => {
      for await (const _ of stream) { stream.send(frame(Uint8Array.of(9, 9, 9))); break }
      await stream.close().catch(() => {})
    })
    const honest = await server(async () => ({ record: rec(5), created: 5 }))
    const c = await client({ askTimeoutMs: 1000 })
    for (const n of [bloated, garbled, honest.n]) await c.n.dial(n.multiaddrs()[0])
    const t0 = Date.now()
    const answers = await c.p.ask(LAYER)
    expect(Date.now() - t0).toBeLessThan(900) // refused at the frame header, not at the deadline
    expect(answers.map(a => a.peer.toString())).toEqual([honest.n.peerId.toString()])
    expect(c.p.stats()).toMatchObject({ peersAsked: 3, answers: 1, failedAnswers: 2, badAnswers: 2 })
    // the two are not asked again
    await c.p.ask(LAYER)
    expect(c.p.stats()).toMatchObject({ peersAsked: 4, answers: 2 })
  })

  it('the server closes a stream carrying an oversized, malformed or missing request, and keeps serving', async () => {
    const s = await server(async () => ({ record: rec(6), created: 6 }), { serveTimeoutMs: 300 })
    const c = await client()
    await c.n.dial(s.n.multiaddrs()[0])
    const answer = async (payload?: Uint8Array): Promise<{ bytes: number, error?: string }> => {
      const stream = await c.n.helia.libp2p.dialProtocol(s.n.peerId, PROTOCOL)
      if (payload != null) stream.send(payload)
      let n = 0
      try {
        for await (const chunk of stream) n += chunk.byteLength
      } catch (err) {
        return { bytes: n, error: (err as Error).name }
      }
      return { bytes: n }
    }
    // a length prefix of 10 MB, over the 128-byte request cap
    expect(await answer(Uint8Array.of(0x80, 0xad, 0xe2, 0x04))).toEqual({ bytes: 0, error: 'StreamResetError' })
    // a length prefix that never ends: refused once it is longer than a 128-byte frame needs
    expect(await answer(new Uint8Array(64).fill(0x80))).toEqual({ bytes: 0, error: 'StreamResetError' })
    // not a CID
    expect(await answer(frame(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])))).toEqual({ bytes: 0, error: 'StreamResetError' })
    // a CID with bytes after it
    expect(await answer(frame(Buffer.concat([LAYER.bytes, Uint8Array.of(0)])))).toEqual({ bytes: 0, error: 'StreamResetError' })
    // nothing at all: closed at the server's deadline
    const t0 = Date.now()
    expect(await answer()).toEqual({ bytes: 0, error: 'StreamResetError' })
    expect(Date.now() - t0).toBeLessThan(1500)
    await until(() => s.p.stats().rejectedRequests === 5, 'five rejected requests')
    // a hand-made request gets a hand-checkable answer
    const stream = await c.n.helia.libp2p.dialProtocol(s.n.peerId, PROTOCOL)
    stream.send(frame(LAYER.bytes))
    const parts: Uint8Array[] = []
    for await (const chunk of stream) parts.push(chunk instanceof Uint8Array ? chunk : chunk.subarray())
    expect(Buffer.compare(Buffer.concat(parts), frame(encodeAnswer({ record: rec(6), created: 6 })))).toBe(0)
    // and the client still gets its answer
    expect((await c.p.ask(LAYER)).map(a => a.created)).toEqual([6])
  })
})
