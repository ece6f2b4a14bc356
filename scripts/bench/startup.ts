/**
 * Start-up benchmark: pull + first run of a container, every scenario side by side in one run,
 * state wiped between runs (a fresh containerd, and a fresh pulling node for ours).
 *
 * Two images:
 *   pyapp    the reference stack's 3-layer image (Debian minbase + python3 + a small app),
 *            workload `python3 /app/app.py`. Rows: the reference stack's own scenarios (its
 *            containerd 1.6 + registry on loopback): `legacy` (full pull into overlayfs),
 *            `esgz-noopt` and `esgz-opt` (the reference stargz snapshotter, lazily), then ours.
 *   debian   our Debian + python3 fixture image, workload importing a few stdlib modules. Rows:
 *            full pull (`ctr images pull` from a loopback registry into overlayfs), then ours.
 * Ours: `ipfs-estargz pull --require-lazy` on a node whose blocks are on a second node over
 * loopback libp2p, then `ctr run` on the lazily mounted layers. A fallback fails the run. Three
 * rows (`--ours`): the image as pushed; as `ipfs-estargz optimize` rebuilt it for the workload;
 * as pushed, with a first-read record learned from a node that ran the workload once.
 *
 * The reference stack is a set of scripts among the reference sources (`--ref-stack DIR`,
 * default `ref-stack` in scripts/fixtures/tools.ts' referenceDir) with a work folder its setup.sh prepared (`--ref-work DIR`); the
 * pyapp image comes from there. Without them only the debian rows are measured.
 *
 * usage: npx tsx scripts/bench/startup.ts [--runs 3] [--images pyapp,debian] [--ref-stack DIR] [--ref-work DIR] [--ours plain,optimized,learned] [--skip-reference] [--node-config TOML] [--profile DIR]
 *        (as root; scripts/bench/startup.sh builds first)
 */
import '../../src/polyfill.js'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { imageFromReader, openOciLayout, parseImageReference, pushImage, resolveImages, type RegistryReference } from '../../src/oci/index.js'
import { startContainerd } from '../fixtures/containerd.js'
import { startDaemon, type RunningDaemon } from '../fixtures/daemon.js'
import { debianPythonImage } from '../fixtures/debian-image.js'
import { cliPath, referenceDir, refstackDir } from '../fixtures/tools.js'
import { startRegistry } from '../fixtures/registry.js'
import { repoBlockBytes } from '../fixtures/repo-blocks.js'
import { removeWorkDir } from '../fixtures/work-dir.js'
import { profileEnv, startProfiling } from './profile.js'

type Variant = 'plain' | 'optimized' | 'learned'
const OUR_ROWS: Record<Variant, string> = {
  plain: 'ours: lazy from an IPFS peer',
  optimized: 'ours: optimized (ipfs-estargz optimize), lazy from a peer',
  learned: 'ours: learned prefetch (record from another node), lazy from a peer'
}

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    images: { type: 'string', default: 'pyapp,debian' },
    'ref-stack': { type: 'string', default: join(referenceDir, 'ref-stack') },
    'ref-work': { type: 'string', default: refstackDir },
    /** Which of our rows: plain (lazy from a peer), optimized (`ipfs-estargz optimize`), learned (a record from another node). */
    ours: { type: 'string', default: 'plain,optimized,learned' },
    /** Only our rows for the pyapp image (when iterating on our side). */
    'skip-reference': { type: 'boolean', default: false },
    /** TOML added to each pulling node's configuration (to compare a setting, e.g. `[fs]\nwait_for_prefetch_at_mount = true`). */
    'node-config': { type: 'string', default: '' },
    /** Write CPU profiles of each pulling daemon and its FUSE manager over the pull and the run into this folder. */
    profile: { type: 'string' }
  }
})
const runs = Number(values.runs)
const profiled = profileEnv(values.profile)

const variants = values.ours.split(',') as Variant[]
for (const v of variants) if (!(v in OUR_ROWS)) throw new Error(`--ours: ${v} is not one of ${Object.keys(OUR_ROWS).join(', ')}`)
const images = new Set(values.images.split(','))
const refStack = values['ref-stack']
const refWork = values['ref-work']

function cli (args: string[]): string {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 })
  if (r.status !== 0) throw new Error(`ipfs-estargz ${args.join(' ')}: ${r.stderr}`)
  return r.stdout
}
const now = (): number => Number(process.hrtime.bigint()) / 1e9
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

/**
 * Seconds, and bytes fetched by the end of the run (and, for ours, by the end of the pull: before
 * the container's first read); for ours, the CPU seconds the seed, the pulling daemon and its FUSE
 * manager spent over the pull and the run (on 2 cores, CPU is what a lazy pull competes for).
 */
interface Sample {
  pull: number
  run: number
  fetched: number
  fetchedAtPull?: number
  cpu?: { seed: number, node: number, manager: number }
  /** For ours: the mounts' source reads (FUSE manager → daemon) and their mean time, the block exchange's requests to peers and the blocks they brought. */
  requests?: { reads: number, readMs: number, exchange: number, blocks: number }
}

/** CPU seconds (user + system) a process has used so far; 0 when it is gone. */
function cpuSeconds (pid: number | undefined): number {
  if (pid == null) return 0
  try {
    // fields after the command's closing parenthesis: utime and stime are the 12th and 13th
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
    return (Number(f[11]) + Number(f[12])) / 100
  } catch {
    return 0
  }
}

/** The pid of the FUSE manager a daemon under `root` started, if one runs. */
function managerPid (root: string): number | undefined {
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue
    try {
      const args = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0')
      if (args.includes('fuse-manager') && args[args.indexOf('--root') + 1] === root) return Number(d)
    } catch {}
  }
  return undefined
}
/** The mounts' source reads and the block exchange's requests so far, from the node's `stats`. */
function requestsOf (root: string): { reads: number, readMs: number, exchange: number, blocks: number } {
  const s = JSON.parse(cli(['stats', '--json', '--repo', root])) as { exchange: { requests: number, blocksReceived: number }, layers: Array<{ fetchMs: { count: number, sumMs: number } }> }
  const reads = s.layers.reduce((n, l) => n + l.fetchMs.count, 0)
  return { reads, readMs: s.layers.reduce((n, l) => n + l.fetchMs.sumMs, 0) / Math.max(1, reads), exchange: s.exchange.requests, blocks: s.exchange.blocksReceived }
}

type Rows = Map<string, Sample[]>
const add = (rows: Rows, name: string, s: Sample): void => { rows.set(name, [...(rows.get(name) ?? []), s]) }

/** The reference stack's rows: its bench.sh, parsed from the raw TSV it writes. */
async function referenceRows (rows: Rows): Promise<void> {
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn('bash', [join(refStack, 'bench.sh'), refWork], {
      env: { ...process.env, REPS: String(runs), SCENARIOS: 'legacy esgz-noopt esgz-opt', BENCH_CMD: 'python3 /app/app.py' },
      stdio: ['ignore', 'pipe', 'inherit']
    })
    let text = ''
    child.stdout.setEncoding('utf8').on('data', (s: string) => { text += s })
    child.on('close', (code) => { code === 0 ? resolve(text) : reject(new Error(`reference bench.sh exited ${String(code)}`)) })
  })
  const tsv = /\(raw rows: (.+)\)/.exec(out)?.[1]
  if (tsv == null) throw new Error(`no raw rows in the reference bench output:\n${out}`)
  const names: Record<string, string> = { legacy: 'full pull (registry, overlayfs)', 'esgz-noopt': 'reference stargz, eStargz', 'esgz-opt': 'reference stargz, optimized eStargz' }
  for (const line of readFileSync(tsv, 'utf8').trim().split('\n').slice(1)) {
    const [sc, , pull, run, , , mbRun] = line.split('\t')
    add(rows, names[sc] ?? sc, { pull: Number(pull), run: Number(run), fetched: Number(mbRun) * 1048576 })
  }
}

/** Waits until the daemon's log holds `text` at least `count` times. */
async function logged (d: RunningDaemon, text: string, count: number, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs
  while (d.log().split(text).length - 1 < count) {
    if (Date.now() > end) throw new Error(`the daemon at ${d.root} did not log "${text}" ${count}× within ${timeoutMs} ms`)
    await new Promise(resolve => setTimeout(resolve, 250))
  }
}

/**
 * Ours: a seed node holding the pushed image; per run a fresh pulling node and containerd.
 * `optimized` pushes the image through `ipfs-estargz optimize` (the workload run once in its
 * sandbox); `learned` first has a teacher node pull and run the un-optimized image, then each
 * pulling node is peered with the seed and the teacher, whose first-read records it fetches.
 */
async function ourRows (rows: Rows, work: string, layout: string, workload: string[], variant: Variant): Promise<void> {
  const originRoot = join(work, `origin-${variant}`)
  const origin = await startDaemon({ root: originRoot, listen: ['/ip4/127.0.0.1/tcp/0'], ...profiled })
  let teacher: RunningDaemon | undefined
  try {
    const cid = variant === 'optimized'
      ? cli(['optimize', `oci:${layout}`, '--repo', originRoot, '--entrypoint', JSON.stringify(workload.slice(0, 1)), '--args', JSON.stringify(workload.slice(1))]).trim()
      : cli(['push', `oci:${layout}`, '--repo', originRoot]).trim()
    const idOf = (root: string): string => (JSON.parse(cli(['id', '--repo', root])) as { addresses: string[] }).addresses[0]
    const peers = [idOf(originRoot)]
    if (variant === 'learned') {
      const root = join(work, 'teacher')
      teacher = await startDaemon({ root, listen: ['/ip4/127.0.0.1/tcp/0'], peers, config: '[prefetch]\nrecord_window_sec = 5\n', logLevel: 'info' })
      const c = await startContainerd({ proxyPlugins: { 'ipfs-estargz': teacher.address } })
      try {
        cli(['pull', `ipfs://${cid}`, '--repo', root, '--address', c.address, '--require-lazy'])
        await c.ctr(['run', '--rm', '--snapshotter', 'ipfs-estargz', `ipfs://${cid}`, 'teacher', ...workload], { timeoutMs: 600_000 })
        await logged(teacher, 'prefetch record published', 1, 120_000)
        await new Promise(resolve => setTimeout(resolve, 7_000)) // the other layers' windows close too
      } finally {
        await c.stop()
      }
      peers.push(idOf(root))
    }
    for (let r = 0; r < runs; r++) {
      const root = join(work, `node-${variant}-${r}`)
      const node = await startDaemon({ root, peers, ...(values['node-config'] !== '' ? { config: values['node-config'].replaceAll('\\n', '\n') + '\n' } : {}), ...profiled })
      const c = await startContainerd({ proxyPlugins: { 'ipfs-estargz': node.address } })
      try {
        const mgr = managerPid(root)
        const cpu0 = [cpuSeconds(origin.proc.pid), cpuSeconds(node.proc.pid), cpuSeconds(mgr)]
        if (values.profile != null) startProfiling([origin.proc.pid, node.proc.pid, mgr])
        const t0 = now()
        cli(['pull', `ipfs://${cid}`, '--repo', root, '--address', c.address, '--require-lazy'])
        const t1 = now()
        const atPull = repoBlockBytes(root)
        await c.ctr(['run', '--rm', '--snapshotter', 'ipfs-estargz', `ipfs://${cid}`, `lazy-${r}`, ...workload], { timeoutMs: 600_000 })
        const t2 = now()
        const cpu = { seed: cpuSeconds(origin.proc.pid) - cpu0[0], node: cpuSeconds(node.proc.pid) - cpu0[1], manager: cpuSeconds(mgr) - cpu0[2] }
        add(rows, OUR_ROWS[variant], { pull: t1 - t0, run: t2 - t1, fetched: repoBlockBytes(root), fetchedAtPull: atPull, cpu, requests: requestsOf(root) })
      } finally {
        await c.stop()
        await node.stop()
        await removeWorkDir(root)
      }
    }
  } finally {
    await teacher?.stop()
    await origin.stop()
  }
}

/** The full pull of the original image from a loopback registry into overlayfs (our containerd). */
async function fullPullRows (rows: Rows, layout: string, workload: string[]): Promise<void> {
  const registry = await startRegistry()
  try {
    const src = await openOciLayout(layout)
    const res = await resolveImages(src)
    const ref = parseImageReference(`docker://${registry.host}/bench/image:latest`) as RegistryReference
    await pushImage(ref, imageFromReader(src, res), { plainHttp: true })
    await src.close()
    const bytes = res.images[0].layers.reduce((n, l) => n + l.size, 0)
    for (let r = 0; r < runs; r++) {
      const c = await startContainerd()
      try {
        const t0 = now()
        await c.ctr(['images', 'pull', '--plain-http', `${registry.host}/bench/image:latest`], { timeoutMs: 600_000 })
        const t1 = now()
        await c.ctr(['run', '--rm', `${registry.host}/bench/image:latest`, `full-${r}`, ...workload], { timeoutMs: 600_000 })
        add(rows, 'full pull (registry, overlayfs)', { pull: t1 - t0, run: now() - t1, fetched: bytes })
      } finally {
        await c.stop()
      }
    }
  } finally {
    await registry.stop()
  }
}

async function imageBytes (layout: string): Promise<number> {
  const src = await openOciLayout(layout)
  try {
    return (await resolveImages(src)).images[0].layers.reduce((n, l) => n + l.size, 0)
  } finally {
    await src.close()
  }
}

function print (title: string, rows: Rows, bytes: number): void {
  const full = rows.get('full pull (registry, overlayfs)')
  const ref = rows.get('reference stargz, eStargz')
  const refOpt = rows.get('reference stargz, optimized eStargz')
  const total = (s: Sample[]): number => median(s.map(x => x.pull + x.run))
  const cpuOf = (s: Sample[]): string => s.every(x => x.cpu != null)
    ? (['seed', 'node', 'manager'] as const).map(k => median(s.map(x => x.cpu?.[k] ?? 0)).toFixed(2)).join(' / ')
    : ''
  const requestCells = (s: Sample[]): string => s.every(x => x.requests != null)
    ? `${median(s.map(x => x.requests?.reads ?? 0))} (${median(s.map(x => x.requests?.readMs ?? 0)).toFixed(1)} ms each) / ${median(s.map(x => x.requests?.exchange ?? 0))} / ${median(s.map(x => x.requests?.blocks ?? 0))}`
    : ''
  console.log(`\n${title} (${(bytes / 1e6).toFixed(1)} MB compressed layers); median of ${runs} runs\n`)
  console.log('| scenario | pull s | run s | total s | vs full pull | vs reference eStargz | vs reference optimized | fetched by first read MB | fetched MB | fetched % of image | CPU s: seed / node / FUSE manager | requests: mount reads (mean time) / exchange requests / blocks |')
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
  for (const [name, samples] of rows) {
    const t = total(samples)
    const fetched = median(samples.map(s => s.fetched))
    const atPull = samples.every(s => s.fetchedAtPull != null) ? (median(samples.map(s => s.fetchedAtPull as number)) / 1e6).toFixed(1) : ''
    const vs = (other: Sample[] | undefined): string => other != null ? `${(t / total(other)).toFixed(2)}×` : ''
    console.log(`| ${name} | ${median(samples.map(s => s.pull)).toFixed(2)} | ${median(samples.map(s => s.run)).toFixed(2)} | ${t.toFixed(2)} | ` +
      `${vs(full)} | ${vs(ref)} | ${vs(refOpt)} | ${atPull} | ${(fetched / 1e6).toFixed(1)} | ${(100 * fetched / bytes).toFixed(1)} % | ${cpuOf(samples)} | ${requestCells(samples)} |`)
  }
}

const work = await mkdtemp(join(tmpdir(), 'bench-startup-'))
try {
  if (images.has('pyapp')) {
    const layout = join(refWork, 'image', 'oci')
    if (!existsSync(join(refStack, 'bench.sh')) || !existsSync(layout)) {
      console.error(`no reference stack at ${refStack} with a work folder ${refWork} (run its setup.sh ${refWork}); skipping the pyapp rows`)
    } else {
      const rows: Rows = new Map()
      if (values['skip-reference'] !== true) await referenceRows(rows)
      for (const v of variants) await ourRows(rows, join(work, 'pyapp'), layout, ['python3', '/app/app.py'], v)
      print('Reference stack image: Debian minbase + python3 + app; workload: python3 /app/app.py', rows, await imageBytes(layout))
    }
  }
  if (images.has('debian')) {
    const image = await debianPythonImage()
    const workload = ['python3', '-c', 'import json, email, http.client, decimal, asyncio, sqlite3; print("ok")']
    const rows: Rows = new Map()
    await fullPullRows(rows, image.layout, workload)
    for (const v of variants) await ourRows(rows, join(work, 'debian'), image.layout, workload, v)
    print(`Debian bookworm + python3 fixture; workload: ${workload.slice(2).join(' ')}`, rows, await imageBytes(image.layout))
  }
} finally {
  await removeWorkDir(work)
}
