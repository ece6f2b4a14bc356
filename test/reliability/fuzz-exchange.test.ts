/**
 * Fuzzing the block-exchange wire format on real libp2p nodes over loopback TCP, both ways:
 * hostile requests to our server, hostile answers to our client. The server answers or resets
 * each stream within its deadline and keeps serving; the client returns the right bytes or
 * nothing (never a wrong block, never a hang), and stores nothing itself.
 */
import fc from 'fast-check'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BlockExchange, PROTOCOL, encodeRequest } from '../../src/ipfs/block-exchange.js'
import { createNode, type IpfsNode, type NodeOptions } from '../../src/ipfs/node.js'
import { silentLogger } from '../../src/logging.js'
import { TempRepos, random, until } from '../ipfs/helpers.js'
import { bytesLike, fuzzTarget, preview, record, within } from './harness.js'

const repos = new TempRepos()
const started: Array<{ stop: () => Promise<void> }> = []
const LISTEN = ['/ip4/127.0.0.1/tcp/0']
/** Short timeouts, so a silent or half-sent case costs a fraction of a second, not 5 s. */
const QUICK = { requestTimeout: 300, suspendMs: 1, hedgeDelay: 20, maxHedgeDelay: 50 }

async function node (opts: Partial<NodeOptions> = {}): Promise<IpfsNode> {
  const n = await createNode({ repo: await repos.dir(), logger: silentLogger(), inboundConnectionsPerSec: 1000, ...opts })
  started.push(n)
  return n
}

function frame (body: Uint8Array): Uint8Array {
  const len: number[] = []
  let n = body.length
  while (n >= 0x80) { len.push((n & 0x7f) | 0x80); n >>>= 7 }
  len.push(n)
  return Buffer.concat([Uint8Array.from(len), body])
}

const rawCid = async (bytes: Uint8Array): Promise<CID> => CID.createV1(raw.code, await sha256.digest(bytes))

afterAll(async () => {
  for (const s of started.reverse()) await s.stop().catch(() => {})
  await repos.cleanup()
})

describe('fuzz: block-exchange frames', () => {
  let server: IpfsNode
  let serverExchange: BlockExchange
  let client: IpfsNode
  let bytes: Uint8Array
  let cid: CID

  beforeAll(async () => {
    server = await node({ listen: LISTEN, exchange: false })
    bytes = random(3000)
    cid = await rawCid(bytes)
    await server.localBlockstore.put(cid, bytes)
    serverExchange = new BlockExchange({ libp2p: server.helia.libp2p, blockstore: server.localBlockstore, logger: silentLogger() }, { requestTimeout: 300 })
    await serverExchange.start()
    started.push(serverExchange)
    client = await node({ listen: LISTEN, exchange: false })
    await client.dial(server.multiaddrs()[0])
  })

  it('hostile requests to the server: each stream is answered or reset within its deadline; honest gets still served', async () => {
    const missing = await rawCid(random(10))
    const samples = [frame(encodeRequest([cid])), frame(encodeRequest([cid, missing, cid])), Buffer.concat([frame(encodeRequest([cid])), frame(encodeRequest([missing]))])]
    let answered = 0
    await fuzzTarget('block-exchange request (server)', bytesLike(samples, { maxRandom: 300 }), async (payload) => {
      const stream = await client.helia.libp2p.dialProtocol(server.peerId, PROTOCOL)
      stream.send(payload)
      await stream.close().catch(() => {}) // half-close: the server sees the end of the request(s)
      try {
        for await (const chunk of stream) { answered += chunk.byteLength }
      } catch (err) {
        // a reset stream is the server's way to refuse; it is libp2p's error, not ours: fine here
        if ((err as Error).name !== 'StreamResetError' && (err as Error).name !== 'StreamAbortedError') throw err
      }
    }, { reduced: 80, full: 2_000, deadlineMs: 5_000 })
    // still serving, the right bytes
    const honest = new BlockExchange({ libp2p: client.helia.libp2p, blockstore: client.localBlockstore, logger: silentLogger() }, QUICK)
    await honest.start()
    try {
      await until(() => honest.peers().some(p => p.equals(server.peerId)), 'identify')
      expect(Buffer.from(await honest.get(cid) ?? []).equals(bytes)).toBe(true)
    } finally {
      await honest.stop()
    }
    expect(answered).toBeGreaterThan(0)
  })

  it('hostile answers to the client: the right block or undefined, never a wrong one; nothing stored', async () => {
    const hostile = await node({ listen: LISTEN, exchange: false })
    let answer: Uint8Array = new Uint8Array(0)
    let hold = false
    await hostile.helia.libp2p.handle(PROTOCOL, async (stream) => {
      for await (const _ of stream) { stream.send(answer); break }
      if (hold) await new Promise(resolve => setTimeout(resolve, 400))
      await stream.close().catch(() => {})
    })
    const c = await node({ exchange: false })
    await c.dial(hostile.multiaddrs()[0])
    await until(() => c.helia.libp2p.getConnections(hostile.peerId).length > 0, 'connection')
    const honestFrame = frame(Buffer.concat([Uint8Array.of(1), bytes]))
    const samples = [honestFrame, frame(Uint8Array.of(0)), Buffer.concat([frame(Uint8Array.of(2)), honestFrame]), frame(Buffer.concat([Uint8Array.of(1), random(3000)]))]
    let got = 0
    let wrong = 0
    await fuzzTarget('block-exchange answer (client)', fc.tuple(bytesLike(samples, { maxRandom: 300 }), fc.boolean()), async ([payload, h]) => {
      answer = payload
      hold = h
      const ex = new BlockExchange({ libp2p: c.helia.libp2p, blockstore: c.localBlockstore, logger: silentLogger() }, QUICK)
      await ex.start()
      try {
        await until(() => ex.peers().some(p => p.equals(hostile.peerId)), 'identify', 3000)
        const out = await within(4000, 'get', async () => await ex.get(cid))
        if (out != null) {
          got++
          if (!Buffer.from(out).equals(bytes)) wrong++
        }
      } finally {
        await ex.stop()
      }
    }, { reduced: 60, full: 1_000, deadlineMs: 8_000, show: ([p, h]: [Uint8Array, boolean]) => `${preview(p)} hold=${h}` })
    record({ kind: 'wrong-bytes', what: 'block-exchange client, hostile answers', bytesChecked: got * bytes.length, wrong })
    expect(wrong).toBe(0)
    expect(await c.localBlockstore.has(cid)).toBe(false)
  })
})
