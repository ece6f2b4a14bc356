/**
 * Where a lazy pull's time goes: a seed daemon holding the pushed image, a pulling daemon peered
 * with it (debug logs), containerd on it; `ipfs-estargz pull` timed, then the pulling daemon's
 * log lines printed with their time since the CLI started.
 *
 * usage: npx tsx scripts/bench/pull-timeline.ts OCI-LAYOUT [WORKLOAD...] (as root)
 * With a workload (e.g. `python3 /app/app.py`), the image is pushed through `ipfs-estargz
 * optimize` for it instead, so the timeline shows the landmark prefetch.
 */
import '../../src/polyfill.js'
import { spawn, spawnSync } from 'node:child_process'
import { mkdtemp, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startContainerd } from '../fixtures/containerd.js'
import { startDaemon } from '../fixtures/daemon.js'
import { cliPath } from '../fixtures/tools.js'
import { removeWorkDir } from '../fixtures/work-dir.js'

const layout = process.argv[2]
const workload = process.argv.slice(3)
const cli = (args: string[]): string => {
  const r = spawnSync(cliPath, args, { encoding: 'utf8', maxBuffer: 1 << 26 })
  if (r.status !== 0) throw new Error(`ipfs-estargz ${args.join(' ')}: ${r.stderr}`)
  return r.stdout
}
const work = await mkdtemp(join(tmpdir(), 'pull-timeline-'))
try {
  const seedRoot = join(work, 'seed')
  const seed = await startDaemon({ root: seedRoot, listen: ['/ip4/127.0.0.1/tcp/0'] })
  const cid = (workload.length > 0
    ? cli(['optimize', `oci:${layout}`, '--repo', seedRoot, '--entrypoint', JSON.stringify(workload.slice(0, 1)), '--args', JSON.stringify(workload.slice(1))])
    : cli(['push', `oci:${layout}`, '--repo', seedRoot])).trim()
  const addr = (JSON.parse(cli(['id', '--repo', seedRoot])) as { addresses: string[] }).addresses[0]
  const root = join(work, 'node')
  const node = await startDaemon({ root, peers: [addr], logLevel: 'debug' })
  const c = await startContainerd({ proxyPlugins: { 'ipfs-estargz': node.address } })
  try {
    const t0 = Date.now()
    const pull = spawn(cliPath, ['pull', `ipfs://${cid}`, '--repo', root, '--address', c.address, '--require-lazy'], { stdio: 'inherit' })
    const code = await new Promise(resolve => pull.on('exit', resolve))
    const t1 = Date.now()
    if (code !== 0) throw new Error(`pull exited ${String(code)}`)
    await new Promise(resolve => setTimeout(resolve, 500))
    console.log(`pull: ${t1 - t0} ms`)
    const managerLog = await readFile(join(root, 'fuse-manager.log'), 'utf8').catch(() => '')
    const lines = [...node.log().split('\n'), ...managerLog.split('\n').map(l => l.replace('{', '{"who":"manager",'))]
      .map(l => { try { return [JSON.parse(l).time as number, l] as const } catch { return [0, l] as const } })
      .sort((a, b) => a[0] - b[0]).map(([, l]) => l)
    for (const line of lines) {
      try {
        const j = JSON.parse(line) as { time: number, msg: string, [k: string]: unknown }
        if (j.time < t0) continue
        const extra = Object.entries(j).filter(([k]) => !['time', 'msg', 'level', 'pid', 'hostname'].includes(k)).map(([k, v]) => `${k}=${JSON.stringify(v).slice(0, 80)}`).join(' ')
        console.log(`${String(j.time - t0).padStart(6)} ${j.msg} ${extra}`)
      } catch {}
    }
  } finally {
    await c.stop()
    await node.stop()
    await seed.stop()
  }
} finally {
  await removeWorkDir(work)
}
