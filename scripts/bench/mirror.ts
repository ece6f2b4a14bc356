/**
 * Mirror benchmark on the Debian+python3 fixture image, on loopback:
 *   - blob download: the largest layer with curl from the mirror (a daemon with `--mirror`) and
 *     from Debian's docker-registry holding the same blob (pushed with `push --to docker://`);
 *   - pull + run with stock containerd (its overlayfs snapshotter, a fresh containerd per run):
 *     `ctr image pull` through the mirror (hosts.toml of `containerd-config --mirror`) vs from
 *     the registry, then `ctr run … python3 -c 'print(6*7)'`.
 * Prints one table of medians (with the CPU seconds each server spent per blob download and per pull, from
 * /proc: other work on the machine slows both, the CPU figure less), the load average, the
 * mirror's first whole read of the blob (the one that also hashes it against its digest) and
 * every run's pull + run. Goals: mirror blob throughput ≥ 1.0× the registry's; pull + run
 * through the mirror ≤ 1.0× the registry's time.
 *
 * usage: npx tsx scripts/bench/mirror.ts [--runs 3] [--blob-only]   (npm run bench:mirror builds first; root)
 */
import '../../src/polyfill.js'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { availableParallelism, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { startContainerd } from '../fixtures/containerd.js'
import { startDaemon } from '../fixtures/daemon.js'
import { debianPythonImage } from '../fixtures/debian-image.js'
import { freePort, startRegistry } from '../fixtures/registry.js'
import { cliPath } from '../fixtures/tools.js'

const { values } = parseArgs({ options: { runs: { type: 'string', default: '3' }, 'blob-only': { type: 'boolean', default: false } } })
const runs = Number(values.runs)
/** Only the blob rows (no containerd pulls): for working on the blob path. */
const blobOnly = values['blob-only']
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

function cli (args: string[]): string {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 })
  if (r.status !== 0) throw new Error(`ipfs-estargz ${args.join(' ')} failed: ${r.stderr}`)
  return r.stdout
}

/** CPU seconds (user + system, all threads) a process has used so far. */
function cpuOf (pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(f[11]) + Number(f[12])) / 100
}

/** MB/s of one download with curl (a separate process: the client's work is not ours). */
function curl (url: string): number {
  const r = spawnSync('curl', ['-sf', '-o', '/dev/null', '-w', '%{speed_download}', url], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`curl ${url} failed`)
  return Number(r.stdout) / 1e6
}

const image = await debianPythonImage()
const dir = await mkdtemp(join(tmpdir(), 'bench-mirror-'))
const registry = await startRegistry()
const mirror = `127.0.0.1:${await freePort()}`
const daemon = await startDaemon({ root: join(dir, 'node'), args: ['--mirror', mirror], logLevel: 'warn' })
try {
  const pushed = JSON.parse(cli(['push', `oci-archive:${image.archive}`, '--repo', join(dir, 'node'), '--json', '--to', `docker://${registry.host}/bench/debian:esgz`, '--plain-http'])) as { root: string, images: Array<{ layers: Array<{ digest: string, size: number }> }> }
  const layer = pushed.images[0].layers.reduce((a, b) => (a.size > b.size ? a : b))
  const blob = { registry: [] as number[], mirror: [] as number[] }
  const cpu = { registry: [] as number[], mirror: [] as number[] }
  const load = [loadavg()[0]]
  const servers = { registry: registry.pid, mirror: daemon.proc.pid as number }
  const urls = { registry: `${registry.url}/v2/bench/debian/blobs/${layer.digest}`, mirror: `http://${mirror}/v2/ipfs/${pushed.root}/blobs/${layer.digest}` }
  const download = (who: 'registry' | 'mirror'): number => {
    const c0 = cpuOf(servers[who])
    const speed = curl(urls[who])
    cpu[who].push(cpuOf(servers[who]) - c0)
    return speed
  }
  // warms both page caches; the mirror's first whole read also hashes the blob against its digest
  download('registry')
  const firstRead = download('mirror')
  cpu.registry.length = 0
  cpu.mirror.length = 0
  for (let i = 0; i < runs; i++) {
    blob.registry.push(download('registry'))
    blob.mirror.push(download('mirror'))
  }

  const hostsDir = join(dir, 'certs.d')
  await mkdir(join(hostsDir, mirror), { recursive: true })
  await writeFile(join(hostsDir, mirror, 'hosts.toml'), cli(['containerd-config', '--mirror', '--address', mirror]))
  const pullCpu = { registry: [] as number[], mirror: [] as number[] }
  const pullRun = async (ref: string, pullArgs: string[], n: number, who: 'registry' | 'mirror'): Promise<{ pull: number, run: number }> => {
    const c = await startContainerd()
    try {
      const t0 = process.hrtime.bigint()
      const c0 = cpuOf(servers[who])
      await c.ctr(['image', 'pull', ...pullArgs, ref], { timeoutMs: 600_000 })
      pullCpu[who].push(cpuOf(servers[who]) - c0)
      const t1 = process.hrtime.bigint()
      const out = await c.ctr(['run', '--rm', ref, `bench-${n}`, 'python3', '-c', 'print(6*7)'])
      const t2 = process.hrtime.bigint()
      if (out.trim() !== '42') throw new Error(`the container said ${out}`)
      return { pull: Number(t1 - t0) / 1e9, run: Number(t2 - t1) / 1e9 }
    } finally {
      await c.stop()
    }
  }
  const times = { registry: [] as Array<{ pull: number, run: number }>, mirror: [] as Array<{ pull: number, run: number }> }
  for (let i = 0; i < (blobOnly ? 0 : runs); i++) {
    times.registry.push(await pullRun(`${registry.host}/bench/debian:esgz`, ['--plain-http'], i, 'registry'))
    times.mirror.push(await pullRun(`${mirror}/ipfs/${pushed.root}:latest`, ['--hosts-dir', hostsDir], i, 'mirror'))
  }
  const row = (what: string, r: number, m: number, unit: string, digits = 1): string => `| ${what} | ${r.toFixed(digits)} ${unit} | ${m.toFixed(digits)} ${unit} | ${(m / r).toFixed(2)}× |`
  const total = (xs: Array<{ pull: number, run: number }>): number => median(xs.map(x => x.pull + x.run))
  load.push(loadavg()[0])
  console.log(`\nmirror vs docker-registry on loopback, same image, medians of ${runs} (blob: ${(layer.size / 1e6).toFixed(1)} MB layer); load average ${load[0].toFixed(1)} at the start, ${load[1].toFixed(1)} at the end, ${String(availableParallelism())} CPUs\n`)
  console.log('| | docker-registry | mirror | mirror / registry |')
  console.log('| --- | --- | --- | --- |')
  console.log(row('blob download', median(blob.registry), median(blob.mirror), 'MB/s', 0))
  console.log(row('server CPU per blob download', median(cpu.registry), median(cpu.mirror), 's', 2))
  if (!blobOnly) {
    console.log(row('ctr image pull', median(times.registry.map(x => x.pull)), median(times.mirror.map(x => x.pull)), 's'))
    console.log(row('server CPU per pull', median(pullCpu.registry), median(pullCpu.mirror), 's', 2))
    console.log(row('ctr run (python3)', median(times.registry.map(x => x.run)), median(times.mirror.map(x => x.run)), 's'))
    console.log(row('pull + run', total(times.registry), total(times.mirror), 's'))
  }
  console.log(`\nblob downloads (MB/s): registry ${blob.registry.map(x => x.toFixed(0)).join(', ')}, mirror ${blob.mirror.map(x => x.toFixed(0)).join(', ')}; mirror's first whole read of the blob (its digest checked too): ${firstRead.toFixed(0)} MB/s`)
  if (!blobOnly) console.log(`pull + run per run: registry ${times.registry.map(x => (x.pull + x.run).toFixed(1)).join(', ')} s, mirror ${times.mirror.map(x => (x.pull + x.run).toFixed(1)).join(', ')} s`)
} finally {
  await daemon.stop()
  await registry.stop()
  await rm(dir, { recursive: true, force: true })
}
