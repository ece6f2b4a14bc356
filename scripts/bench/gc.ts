/**
 * Garbage-collection benchmark: a repo holding 10 synthetic images (two noisy layers each, so
 * they share little), half of them removed with `image rm`, then `gc --dry-run` and `gc`.
 * Reported: the repo's blocks and bytes before, what the collection freed, its own time (mark +
 * sweep, from its report) and the command's wall time (node start-up and the repo's open
 * included), and its peak RSS (GNU time).
 *
 * usage: npx tsx scripts/bench/gc.ts [--images 10] [--mb 8] [--remove 5]   (npm run bench:gc builds first)
 */
import '../../src/polyfill.js'
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { allBlobs, makeImage, tagged, writeLayout } from '../fixtures/oci-image.js'
import { cliPath } from '../fixtures/tools.js'

const { values } = parseArgs({ options: { images: { type: 'string', default: '10' }, mb: { type: 'string', default: '8' }, remove: { type: 'string', default: '5' } } })
const images = Number(values.images)
const mb = Number(values.mb)
const removeCount = Number(values.remove)
const MB = 1e6

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
  let pushSeconds = 0
  for (let i = 0; i < images; i++) {
    const img = makeImage({ seed: `gc-${i}`, layerCount: 2, layerSize: Math.round(mb * MB / 2), noise: true })
    const layout = join(work, `img-${i}`)
    await writeLayout(layout, allBlobs(img), [tagged(img.manifest.descriptor, 'latest')])
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
  console.log(`${images} images of 2 × ${mb / 2} MB (noisy), ${removeCount} removed; pushes took ${pushSeconds.toFixed(1)} s; ${tmpdir()}`)
  console.log(`repo before: ${r.blocks.before} blocks, ${(r.blocks.beforeBytes / MB).toFixed(1)} MB`)
  console.log('| run | blocks freed | MB freed | blocks kept | MB kept | collection s | command wall s | peak RSS MB |')
  console.log('|---|---|---|---|---|---|---|---|')
  for (const [what, out, t] of [['gc --dry-run', d, dry], ['gc', r, real]] as const) {
    console.log(`| ${what} | ${out.blocks.freed} | ${(out.blocks.freedBytes / MB).toFixed(1)} | ${out.blocks.kept} | ${(out.blocks.keptBytes / MB).toFixed(1)} | ${(out.durationMs / 1000).toFixed(2)} | ${t.seconds.toFixed(2)} | ${t.rssMb.toFixed(0)} |`)
  }
} finally {
  await rm(work, { recursive: true, force: true })
}
