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
 * loopback libp2p, then `ctr run` on the lazily mounted layers. A fallback fails the run.
 *
 * The reference stack is a set of scripts among the reference sources (`--ref-stack DIR`,
 * default `ref-stack` in scripts/fixtures/tools.ts' referenceDir) with a work folder its setup.sh prepared (`--ref-work DIR`); the
 * pyapp image comes from there. Without them only the debian rows are measured.
 *
 * usage: npx tsx scripts/bench/startup.ts [--runs 3] [--images pyapp,debian] [--ref-stack DIR] [--ref-work DIR] [--skip-reference]
 *        (as root; scripts/bench/startup.sh builds first)
 */
import '../../src/polyfill.js'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { imageFromReader, openOciLayout, parseImageReference, pushImage, resolveImages, type RegistryReference } from '../../src/oci/index.js'
import { mountsUnder, unmountUnder } from '../../src/fs/mountinfo.js'
import { startContainerd } from '../fixtures/containerd.js'
import { startDaemon } from '../fixtures/daemon.js'
import { debianPythonImage } from '../fixtures/debian-image.js'
import { cliPath, referenceDir } from '../fixtures/tools.js'
import { startRegistry } from '../fixtures/registry.js'

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    images: { type: 'string', default: 'pyapp,debian' },
    'ref-stack': { type: 'string', default: join(referenceDir, 'ref-stack') },
    'ref-work': { type: 'string', default: '/work/refstack' },
    /** Only our rows for the pyapp image (when iterating on our side). */
    'skip-reference': { type: 'boolean', default: false }
  }
})
const runs = Number(values.runs)
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
const du = (dir: string): number => Number(spawnSync('du', ['-sb', dir], { encoding: 'utf8' }).stdout.split(/\s/)[0])

interface Sample { pull: number, run: number, fetched: number }
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

/** Ours: a seed node holding the pushed image; per run a fresh pulling node and containerd. */
async function ourRows (rows: Rows, work: string, layout: string, workload: string[]): Promise<void> {
  const origin = await startDaemon({ root: join(work, 'origin'), listen: ['/ip4/127.0.0.1/tcp/0'] })
  try {
    const cid = cli(['push', `oci:${layout}`, '--repo', join(work, 'origin')]).trim()
    const peer = (JSON.parse(cli(['id', '--repo', join(work, 'origin')])) as { addresses: string[] }).addresses[0]
    for (let r = 0; r < runs; r++) {
      const root = join(work, `node-${r}`)
      const node = await startDaemon({ root, peers: [peer] })
      const c = await startContainerd({ proxyPlugins: { 'ipfs-estargz': node.address } })
      try {
        const t0 = now()
        cli(['pull', `ipfs://${cid}`, '--repo', root, '--address', c.address, '--require-lazy'])
        const t1 = now()
        await c.ctr(['run', '--rm', '--snapshotter', 'ipfs-estargz', `ipfs://${cid}`, `lazy-${r}`, ...workload], { timeoutMs: 600_000 })
        const t2 = now()
        add(rows, 'ours: lazy from an IPFS peer', { pull: t1 - t0, run: t2 - t1, fetched: du(join(root, 'blocks')) })
      } finally {
        await c.stop()
        await node.stop()
        await unmountUnder(root)
        if ((await mountsUnder(root)).length === 0) await rm(root, { recursive: true, force: true })
      }
    }
  } finally {
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
  const total = (s: Sample[]): number => median(s.map(x => x.pull + x.run))
  console.log(`\n${title} (${(bytes / 1e6).toFixed(1)} MB compressed layers); median of ${runs} runs\n`)
  console.log('| scenario | pull s | run s | total s | vs full pull | vs reference eStargz | fetched MB | fetched % of image |')
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- |')
  for (const [name, samples] of rows) {
    const t = total(samples)
    const fetched = median(samples.map(s => s.fetched))
    console.log(`| ${name} | ${median(samples.map(s => s.pull)).toFixed(2)} | ${median(samples.map(s => s.run)).toFixed(2)} | ${t.toFixed(2)} | ` +
      `${full != null ? `${(t / total(full)).toFixed(2)}×` : ''} | ${ref != null ? `${(t / total(ref)).toFixed(2)}×` : ''} | ${(fetched / 1e6).toFixed(1)} | ${(100 * fetched / bytes).toFixed(1)} % |`)
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
      await ourRows(rows, join(work, 'pyapp'), layout, ['python3', '/app/app.py'])
      print('Reference stack image: Debian minbase + python3 + app; workload: python3 /app/app.py', rows, await imageBytes(layout))
    }
  }
  if (images.has('debian')) {
    const image = await debianPythonImage()
    const workload = ['python3', '-c', 'import json, email, http.client, decimal, asyncio, sqlite3; print("ok")']
    const rows: Rows = new Map()
    await fullPullRows(rows, image.layout, workload)
    await ourRows(rows, join(work, 'debian'), image.layout, workload)
    print(`Debian bookworm + python3 fixture; workload: ${workload.slice(2).join(' ')}`, rows, await imageBytes(image.layout))
  }
} finally {
  await unmountUnder(work)
  if ((await mountsUnder(work)).length === 0) await rm(work, { recursive: true, force: true })
}
