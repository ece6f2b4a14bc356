/**
 * The floor under the block exchange: what our libp2p stack (TCP, noise, yamux, as
 * src/ipfs/node.ts builds it) carries between two processes on loopback, with nothing of ours on
 * the path — no disk, no hashing, no blockstore. Two patterns: one stream the server writes
 * `--mib` MiB into (bulk), and request-response on length-prefixed streams, `--block-kib` per
 * answer, `--concurrency` streams at once (the exchange's pattern). Compare with
 * scripts/bench/peer-read.ts, the whole fetch path over the same stack.
 *
 * usage: npx tsx scripts/bench/libp2p-floor.ts [--mib 64] [--block-kib 1024] [--concurrency 1,4] [--runs 3]
 */
import '../../src/polyfill.js'
import { fork } from 'node:child_process'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { lpStream } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import { createNode } from '../../src/ipfs/node.js'
import { silentLogger } from '../../src/logging.js'
import { removeWorkDir } from '../fixtures/work-dir.js'

const { values } = parseArgs({
  options: {
    mib: { type: 'string', default: '64' },
    'block-kib': { type: 'string', default: '1024' },
    concurrency: { type: 'string', default: '1,4' },
    runs: { type: 'string', default: '3' },
    serve: { type: 'boolean', default: false }
  }
})
const total = Number(values.mib) << 20
const block = Number(values['block-kib']) << 10
const BULK = '/ipfs-estargz-bench/bulk/1'
const RR = '/ipfs-estargz-bench/rr/1'
const limits = { maxDataLength: block + 1024, maxBufferSize: 2 * block + 1024 }

const work = await mkdtemp(join(tmpdir(), 'libp2p-floor-'))
const node = await createNode({ repo: join(work, values.serve ? 'server' : 'client'), logger: silentLogger(), ...(values.serve ? { listen: ['/ip4/127.0.0.1/tcp/0'] } : {}) })
if (values.serve) {
  const bytes = Buffer.alloc(block, 7)
  await node.helia.libp2p.handle(BULK, async (stream: Stream) => {
    for (let sent = 0; sent < total; sent += block) if (!stream.send(bytes)) await stream.onDrain()
    await stream.close()
  }, { maxInboundStreams: 256 })
  await node.helia.libp2p.handle(RR, async (stream: Stream) => {
    const lp = lpStream(stream, limits)
    for (;;) {
      try { await lp.read() } catch { break }
      await lp.writeV([bytes])
    }
  }, { maxInboundStreams: 256 })
  process.send?.(node.multiaddrs()[0].toString())
  process.on('disconnect', () => { void node.stop().then(async () => { await removeWorkDir(work) }).finally(() => process.exit(0)) })
} else {
  const server = fork(process.argv[1], [...process.argv.slice(2), '--serve'], { execArgv: process.execArgv })
  try {
    const addr = await new Promise<string>((resolve, reject) => { server.once('message', m => { resolve(String(m)) }); server.once('exit', code => { reject(new Error(`server exited with ${String(code)}`)) }) })
    await node.dial(addr)
    const conn = node.helia.libp2p.getConnections()[0]
    const mbps = (bytes: number, ms: number): string => (bytes / ms / 1000).toFixed(0)
    console.log(`| pattern | run MB/s (${values.runs} runs) |`)
    console.log('| --- | --- |')
    const bulk: string[] = []
    for (let r = 0; r < Number(values.runs); r++) {
      const t = performance.now()
      const s = await conn.newStream(BULK)
      let got = 0
      for await (const c of s) got += c.byteLength
      bulk.push(mbps(got, performance.now() - t))
    }
    console.log(`| one stream, ${values.mib} MiB | ${bulk.join(', ')} |`)
    for (const c of values.concurrency.split(',').map(Number)) {
      const rr: string[] = []
      for (let r = 0; r < Number(values.runs); r++) {
        const t = performance.now()
        let got = 0
        await Promise.all(Array.from({ length: c }, async () => {
          const s = await conn.newStream(RR, { maxOutboundStreams: 256 })
          const lp = lpStream(s, limits)
          for (let i = 0; i < Math.ceil(total / block / c); i++) {
            await lp.write(Uint8Array.of(1))
            // not `got += await …`: that reads `got` before the await, losing the other streams' bytes
            const answer = await lp.read()
            got += answer.byteLength
          }
          await s.close()
        }))
        rr.push(mbps(got, performance.now() - t))
      }
      console.log(`| request-response, ${values['block-kib']} KiB answers, ${c} stream(s) | ${rr.join(', ')} |`)
    }
  } finally {
    server.disconnect()
    await node.stop()
    await removeWorkDir(work)
  }
}
