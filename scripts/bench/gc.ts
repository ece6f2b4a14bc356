/**
 * Garbage-collection benchmark: a repo holding 10 synthetic images, each a base layer all of
 * them share (`--base-mb`) and a layer of its own of random bytes (`--mb`), half of them removed
 * with `image rm`, then `gc --dry-run` and `gc` (the removed images' own layers go, the base stays).
 * Reported: the repo's blocks and bytes before, what the collection freed, its own time (mark +
 * sweep, from its report) and the command's wall time (node start-up and the repo's open
 * included), and its peak RSS (GNU time).
 *
 * usage: npx tsx scripts/bench/gc.ts [--images 10] [--mb 8] [--base-mb 8] [--remove 5] [--small-files N]
 *   (--small-files N: each image's own layer is N files of mb/N bytes instead of one file: many small blocks)   (npm run bench:gc builds first)
 */
import '../../src/polyfill.js'
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { randomBytes } from 'node:crypto'
import { gzipSync } from 'node:zlib'
import { MediaType } from '../../src/oci/media-types.js'
import { sha256 } from '../fixtures/digest.js'
import { blob, jsonBlob, tagged, writeLayout } from '../fixtures/oci-image.js'
import { makeTar } from '../fixtures/tar.js'
import { cliPath } from '../fixtures/tools.js'

const { values } = parseArgs({ options: { images: { type: 'string', default: '10' }, mb: { type: 'string', default: '8' }, remove: { type: 'string', default: '5' }, 'base-mb': { type: 'string', default: '8' }, 'small-files': { type: 'string', default: '0' } } })
const images = Number(values.images)
const mb = Number(values.mb)
const removeCount = Number(values.remove)
const MB = 1e6

/** An OCI layout of gzip layers, one file of the given bytes each (level 1: random bytes do not compress). */
async function writeImage (dir: string, files: Uint8Array[], smallFiles = 0): Promise<void> {
  const tars = files.map((data, i) => {
    if (i === 0 || smallFiles === 0) return makeTar([{ name: `layer${i}/data.bin`, data }])
    const size = Math.floor(data.length / smallFiles)
    return makeTar(Array.from({ length: smallFiles }, (_, f) => ({ name: `layer${i}/d${f % 64}/f${f}`, data: data.subarray(f * size, (f + 1) * size) })))
  })
  const layers = tars.map(t => blob(MediaType.OciLayerGzip, gzipSync(t, { level: 1 })))
  const config = jsonBlob(MediaType.OciConfig, { architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: tars.map(sha256) } })
  const manifest = jsonBlob(MediaType.OciManifest, { schemaVersion: 2, mediaType: MediaType.OciManifest, config: config.descriptor, layers: layers.map(b => b.descriptor) })
  await writeLayout(dir, [...layers, config, manifest], [tagged(manifest.descriptor, 'latest')])
}

function timed (args: string[]): { seconds: number, rssMb: number, stdout: string } {
  const start = process.hrtime.bigint()
  const r = spawnSync('/usr/bin/time', ['-f', '%M', cliPath, ...args], { encoding: 'utf8', maxBuffer: 1 << 28 })
  const seconds = Number(process.hrtime.bigint() - start) / 1e9
  if (r.status !== 0) throw new Error(`ipfs-estargz ${args.join(' ')} failed: ${r.stderr}`)
  return { seconds, rssMb: Number(r.stderr.trim().split('\n').at(-1)) / 1024, stdout: r.stdout }
}

interface GcOut { freedBytes: number, blocks: { freed: number, freedBytes: number, kept: number, keptBytes: number, before: number, beforeBytes: number }, durationMs: number }

const work = await mkdtemp(join(tmpdir(), 'bench-gc-'))
try {
  const repo = join(work, 'repo')
  const roots: string[] = []
  const base = randomBytes(Math.round(Number(values['base-mb']) * MB))
  let pushSeconds = 0
  for (let i = 0; i < images; i++) {
    const layout = join(work, `img-${i}`)
    await writeImage(layout, [base, randomBytes(Math.round(mb * MB))], Number(values['small-files']))
    const p = timed(['push', `oci:${layout}`, '--repo', repo])
    pushSeconds += p.seconds
    roots.push(p.stdout.trim())
    await rm(layout, { recursive: true, force: true })
  }
  for (const root of roots.slice(0, removeCount)) timed(['image', 'rm', root, '--repo', repo])
  const dry = timed(['gc', '--dry-run', '--repo', repo])
  const real = timed(['gc', '--repo', repo])
  const d = JSON.parse(dry.stdout) as GcOut
  const r = JSON.parse(real.stdout) as GcOut
  console.log(`${images} images (a shared ${values['base-mb']} MB base layer + ${mb} MB of their own${values['small-files'] !== '0' ? ` in ${values['small-files']} files` : ''}), ${removeCount} removed; pushes took ${pushSeconds.toFixed(1)} s; ${tmpdir()}`)
  console.log(`repo before: ${r.blocks.before} blocks, ${(r.blocks.beforeBytes / MB).toFixed(1)} MB`)
  console.log('| run | blocks freed | MB freed | blocks kept | MB kept | collection s | command wall s | peak RSS MB |')
  console.log('|---|---|---|---|---|---|---|---|')
  for (const [what, out, t] of [['gc --dry-run', d, dry], ['gc', r, real]] as const) {
    console.log(`| ${what} | ${out.blocks.freed} | ${(out.blocks.freedBytes / MB).toFixed(1)} | ${out.blocks.kept} | ${(out.blocks.keptBytes / MB).toFixed(1)} | ${(out.durationMs / 1000).toFixed(2)} | ${t.seconds.toFixed(2)} | ${t.rssMb.toFixed(0)} |`)
  }
} finally {
  await rm(work, { recursive: true, force: true })
}
