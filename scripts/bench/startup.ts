/**
 * Start-up benchmark (issue 6): the same image and workload, every scenario side by side, state
 * wiped between runs (a fresh containerd, and a fresh pulling node for the IPFS scenarios).
 *   full pull        `ctr images pull` of the original image from Debian's docker-registry on
 *                    loopback, overlayfs snapshotter, then `ctr run`
 *   lazy from IPFS   `ipfs-estargz pull` on a node whose blocks are on a second node over
 *                    loopback libp2p, `ctr run` on lazily mounted layers
 * Workload: python3 importing json, email, http.client, decimal, asyncio, sqlite3.
 * Prints pull, run and total seconds (medians) and bytes fetched. Goals: lazy total ≤ 0.25× the
 * full pull's; bytes fetched ≤ 20 % of the image.
 *
 * usage: npx tsx scripts/bench/startup.ts [--runs 3] [--readahead 262144,1048576]     (as root; scripts/bench/startup.sh builds first)
 */
import '../../src/polyfill.js'
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { imageFromSource, openOciLayout, parseImageReference, pushImage, resolveImages, type RegistryReference } from '../../src/oci/index.js'
import { mountsUnder, unmountUnder } from '../../src/snapshotter/overlay.js'
import { startContainerd } from '../../test/helpers/containerd.js'
import { startDaemon } from '../../test/helpers/daemon.js'
import { debianPythonImage } from '../../test/helpers/images.js'
import { cliPath } from '../../test/helpers/tools.js'
import { startRegistry } from '../../test/oci/registry-fixture.js'

const { values } = parseArgs({ options: { runs: { type: 'string', default: '3' }, readahead: { type: 'string', default: '' } } })
const runs = Number(values.runs)
/** Extra lazy rows with `[fs] readahead_bytes` set (comma list of byte counts). */
const readaheads = values.readahead === '' ? [] : values.readahead.split(',').map(Number)
const WORKLOAD = ['python3', '-c', 'import json, email, http.client, decimal, asyncio, sqlite3; print("ok")']

function cli (args: string[]): string {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 })
  if (r.status !== 0) throw new Error(`ipfs-estargz ${args.join(' ')}: ${r.stderr}`)
  return r.stdout
}
const now = (): number => Number(process.hrtime.bigint()) / 1e9
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const du = (dir: string): number => Number(spawnSync('du', ['-sb', dir], { encoding: 'utf8' }).stdout.split(/\s/)[0])

interface Sample { pull: number, run: number, fetched: number }

const image = await debianPythonImage()
const work = await mkdtemp(join(tmpdir(), 'bench-startup-'))
const registry = await startRegistry()
const results = new Map<string, Sample[]>()
let imageBytes = 0
try {
  // The original (gzip, not eStargz) image in the registry, for the full-pull baseline.
  const src = await openOciLayout(image.layout)
  const res = await resolveImages(src)
  imageBytes = res.images[0].layers.reduce((n, l) => n + l.size, 0)
  const ref = parseImageReference(`docker://${registry.host}/bench/debian-python:latest`) as RegistryReference
  await pushImage(ref, imageFromSource(src, res), { plainHttp: true })
  await src.close()

  // The origin node: the image converted and published once.
  const origin = await startDaemon({ root: join(work, 'origin'), listen: ['/ip4/127.0.0.1/tcp/0'] })
  const cid = cli(['push', `oci:${image.layout}`, '--repo', join(work, 'origin')]).trim()
  const peer = (JSON.parse(cli(['id', '--repo', join(work, 'origin')])) as { addresses: string[] }).addresses[0]

  for (let r = 0; r < runs; r++) {
    // full pull
    {
      const c = await startContainerd()
      try {
        const t0 = now()
        await c.ctr(['images', 'pull', '--plain-http', `${registry.host}/bench/debian-python:latest`], { timeoutMs: 600_000 })
        const t1 = now()
        await c.ctr(['run', '--rm', `${registry.host}/bench/debian-python:latest`, `full-${r}`, ...WORKLOAD], { timeoutMs: 600_000 })
        const t2 = now()
        results.set('full pull (registry, overlayfs)', [...(results.get('full pull (registry, overlayfs)') ?? []), { pull: t1 - t0, run: t2 - t1, fetched: imageBytes }])
      } finally {
        await c.stop()
      }
    }
    // lazy from IPFS (and the same with a readahead window, when asked)
    for (const ra of [0, ...readaheads]) {
      const name = ra === 0 ? 'lazy from IPFS (peer over loopback)' : `lazy from IPFS, ${ra >> 10} KiB readahead`
      const root = join(work, `node-${r}-${ra}`)
      const node = await startDaemon({ root, peers: [peer], config: `[fs]\nbackground_fetch = false\nreadahead_bytes = ${ra}\n` })
      const c = await startContainerd({ proxyPlugins: { 'ipfs-estargz': node.address } })
      try {
        const t0 = now()
        cli(['pull', `ipfs://${cid}`, '--repo', root, '--address', c.address])
        const t1 = now()
        await c.ctr(['run', '--rm', '--snapshotter', 'ipfs-estargz', `ipfs://${cid}`, `lazy-${r}-${ra}`, ...WORKLOAD], { timeoutMs: 600_000 })
        const t2 = now()
        results.set(name, [...(results.get(name) ?? []), { pull: t1 - t0, run: t2 - t1, fetched: du(join(root, 'blocks')) }])
      } finally {
        await c.stop()
        await node.stop()
        await unmountUnder(root)
        if ((await mountsUnder(root)).length === 0) await rm(root, { recursive: true, force: true })
      }
    }
  }
  await origin.stop()

  const full = results.get('full pull (registry, overlayfs)') as Sample[]
  const fullTotal = median(full.map(s => s.pull + s.run))
  console.log(`\nDebian bookworm + python3 (${(imageBytes / 1e6).toFixed(1)} MB compressed layers); workload: ${WORKLOAD.slice(2).join(' ')}; median of ${runs} runs\n`)
  console.log('| scenario | pull s | run s | total s | vs full pull | fetched MB | fetched % of image |')
  console.log('| --- | --- | --- | --- | --- | --- | --- |')
  for (const [name, samples] of results) {
    const total = median(samples.map(s => s.pull + s.run))
    const fetched = median(samples.map(s => s.fetched))
    console.log(`| ${name} | ${median(samples.map(s => s.pull)).toFixed(2)} | ${median(samples.map(s => s.run)).toFixed(2)} | ${total.toFixed(2)} | ${(total / fullTotal).toFixed(2)}× | ${(fetched / 1e6).toFixed(1)} | ${(100 * fetched / imageBytes).toFixed(1)} % |`)
  }
  console.log('| lazy from IPFS, optimized | (needs the workload optimization issue) | | | | | |')
} finally {
  await registry.stop()
  await unmountUnder(work)
  if ((await mountsUnder(work)).length === 0) await rm(work, { recursive: true, force: true })
}
