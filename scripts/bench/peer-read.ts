/**
 * Bulk reads from a peer, through the daemon's whole fetch path: a seed daemon holding the
 * pushed image, a second daemon peered with it, and range reads of each layer through the second
 * daemon's blob API (what the FUSE manager asks: DAG walk, block exchange, checks, blockstore
 * writes). Prints per layer the time, the throughput, and the CPU seconds and minor page faults
 * of both daemons, then their peak RSS, from /proc. What a landmark or learned prefetch costs, without FUSE.
 *
 * usage: npx tsx scripts/bench/peer-read.ts OCI-LAYOUT [--mib 10] [--step-kib 1024] [--concurrency 4]
 *   [--priority prefetch|foreground|background] [--perf DIR] (root for --perf: `perf record -g` of both daemons)
 *   [--profile DIR] (V8 CPU profiles of both daemons over the reads only, DIR/daemon-PID.cpuprofile)
 */
import '../../src/polyfill.js'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { UnixHttpClient } from '../../src/unix-http.js'
import { startDaemon, type RunningDaemon } from '../fixtures/daemon.js'
import { cliPath } from '../fixtures/tools.js'
import { removeWorkDir } from '../fixtures/work-dir.js'
import { profileEnv, startProfiling } from './profile.js'

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    mib: { type: 'string', default: '10' },
    'step-kib': { type: 'string', default: '1024' },
    concurrency: { type: 'string', default: '4' },
    priority: { type: 'string', default: 'prefetch' },
    perf: { type: 'string' },
    profile: { type: 'string' }
  }
})
const layout = positionals[0]
if (layout == null) throw new Error('usage: peer-read.ts OCI-LAYOUT [options]')
const maxBytes = Number(values.mib) * 2 ** 20
const step = Number(values['step-kib']) * 1024
const concurrency = Number(values.concurrency)

const cli = (args: string[]): string => {
  const r = spawnSync(cliPath, args, { encoding: 'utf8', maxBuffer: 1 << 26 })
  if (r.status !== 0) throw new Error(`ipfs-estargz ${args.join(' ')}: ${r.stderr}`)
  return r.stdout
}
/** utime + stime (s) and minor faults of a process, from /proc/PID/stat. */
function usage (pid: number): { cpu: number, faults: number } {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return { cpu: (Number(f[11]) + Number(f[12])) / 100, faults: Number(f[7]) }
}

const profiled = profileEnv(values.profile)

const work = await mkdtemp(join(tmpdir(), 'peer-read-'))
const daemons: RunningDaemon[] = []
const perfs: ChildProcess[] = []
try {
  const seedRoot = join(work, 'seed')
  const seed = await startDaemon({ root: seedRoot, listen: ['/ip4/127.0.0.1/tcp/0'], ...profiled })
  daemons.push(seed)
  const cid = cli(['push', `oci:${layout}`, '--repo', seedRoot]).trim()
  const image = (JSON.parse(cli(['image', 'inspect', cid, '--repo', seedRoot])) as { images: Array<{ layers: Array<{ cid: string, size: number }> }> }).images[0]
  const addr = (JSON.parse(cli(['id', '--repo', seedRoot])) as { addresses: string[] }).addresses[0]
  const root = join(work, 'node')
  const node = await startDaemon({ root, peers: [addr], ...profiled })
  daemons.push(node)
  const http = new UnixHttpClient(join(root, 'api.sock'), {
    agent: { keepAlive: true, maxSockets: concurrency },
    callTimeoutMs: 0,
    errors: { answered: (_c, a) => new Error(a.message), timeout: () => new Error('timeout'), cut: () => new Error('answer cut') }
  })
  const pids = [seed.proc.pid as number, node.proc.pid as number]
  if (values.perf != null) {
    for (const [i, pid] of pids.entries()) perfs.push(spawn('perf', ['record', '-g', '-F', '999', '-p', String(pid), '-o', join(values.perf, `${i === 0 ? 'seed' : 'node'}.perf.data`)], { stdio: 'ignore' }))
    await new Promise(resolve => setTimeout(resolve, 500))
  }
  if (values.profile != null) startProfiling(pids)
  console.log('| layer | bytes | ms | MB/s | CPU s: seed / node | minor faults: seed / node |')
  console.log('| --- | --- | --- | --- | --- | --- |')
  for (const [i, layer] of image.layers.entries()) {
    const total = Math.min(maxBytes, layer.size)
    const before = pids.map(usage)
    const t0 = performance.now()
    let next = 0
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (next < total) {
        const offset = next
        next += step
        await http.bytes('GET', `/v1/blobs/${layer.cid}?offset=${offset}&length=${Math.min(step, total - offset)}&priority=${values.priority}`)
      }
    }))
    const ms = performance.now() - t0
    const after = pids.map(usage)
    const d = (k: 'cpu' | 'faults', j: number): number => after[j][k] - before[j][k]
    console.log(`| ${i + 1} | ${total} | ${ms.toFixed(0)} | ${(total / ms / 1000).toFixed(1)} | ${d('cpu', 0).toFixed(2)} / ${d('cpu', 1).toFixed(2)} | ${d('faults', 0)} / ${d('faults', 1)} |`)
  }
  http.close()
  const peak = (pid: number): number => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024
  console.log(`peak RSS MB: seed ${peak(pids[0]).toFixed(0)}, node ${peak(pids[1]).toFixed(0)}`)
  if (process.env.PEER_READ_STATS != null) {
    console.log(cli(['stats', '--repo', root, '--json']))
    console.log(node.log().split('\n').filter(l => l.includes('failed')).slice(0, 10).join('\n'))
  }
} finally {
  for (const p of perfs) p.kill('SIGINT')
  for (const d of daemons.reverse()) await d.stop().catch(() => {})
  await removeWorkDir(work)
}
