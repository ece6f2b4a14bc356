/**
 * Bundle benchmark (the export/import part of the mirror figures): `ipfs-estargz export` and
 * `ipfs-estargz import` of the Debian+python3 fixture image, pushed once into a repo.
 *   - export: the image's CAR written to a file (tmpfs or disk: wherever $TMPDIR is);
 *   - import: that CAR into a fresh repo each run (every block checked against its CID, every
 *     blob against its digest, then moved in, pinned and listed).
 * Throughput is the CAR's size over the command's wall time (node start-up included, ~1 s);
 * peak RSS is the command's (GNU time's maximum resident set size), run as installed (the bin's
 * shebang settings). `--synthetic-mb N` uses a synthetic image of two N/2 MB layers instead, to
 * see that memory does not grow with the image.
 *
 * usage: npx tsx scripts/bench/bundle.ts [--runs 3] [--level 9] [--synthetic-mb N]   (scripts/bench/bundle.sh builds first)
 */
import '../../src/polyfill.js'
import { spawnSync } from 'node:child_process'
import { statSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { debianPythonImage } from '../fixtures/debian-image.js'
import { allBlobs, makeImage, tagged, writeLayout } from '../fixtures/oci-image.js'
import { cliPath } from '../fixtures/tools.js'

const { values } = parseArgs({ options: { runs: { type: 'string', default: '3' }, level: { type: 'string', default: '9' }, 'synthetic-mb': { type: 'string' } } })
const runs = Number(values.runs)
const MB = 1e6

/** Wall seconds and peak RSS (MB) of one CLI command, run under GNU time. */
function timed (args: string[]): { seconds: number, rssMb: number, stdout: string } {
  const start = process.hrtime.bigint()
  const r = spawnSync('/usr/bin/time', ['-f', '%M', cliPath, ...args], { encoding: 'utf8', maxBuffer: 1 << 28 })
  const seconds = Number(process.hrtime.bigint() - start) / 1e9
  if (r.status !== 0) throw new Error(`ipfs-estargz ${args.join(' ')} failed: ${r.stderr}`)
  const kb = Number(r.stderr.trim().split('\n').at(-1))
  return { seconds, rssMb: kb / 1024, stdout: r.stdout }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

const work = await mkdtemp(join(tmpdir(), 'bench-bundle-'))
try {
  let layout: string
  let what: string
  if (values['synthetic-mb'] != null) {
    const mb = Number(values['synthetic-mb'])
    const img = makeImage({ seed: 'bench', layerCount: 2, layerSize: Math.round(mb * MB / 2), noise: true })
    layout = join(work, 'layout')
    await writeLayout(layout, allBlobs(img), [tagged(img.manifest.descriptor, 'latest')])
    what = `synthetic image (2 layers of ${mb / 2} MB)`
  } else {
    layout = (await debianPythonImage()).layout
    what = 'Debian+python3 image'
  }
  const repoA = join(work, 'a')
  const push = timed(['push', `oci:${layout}`, '--repo', repoA, '--level', values.level as string])
  const root = push.stdout.trim()
  const car = join(work, 'image.car')
  const exports: Array<{ seconds: number, rssMb: number }> = []
  const imports: Array<{ seconds: number, rssMb: number }> = []
  for (let r = 0; r < runs; r++) {
    await rm(car, { force: true })
    exports.push(timed(['export', root, '-o', car, '--repo', repoA, '--no-progress']))
    const repoB = join(work, `b${r}`)
    imports.push(timed(['import', car, '--repo', repoB, '--no-progress']))
    await rm(repoB, { recursive: true, force: true })
  }
  const size = statSync(car).size
  const row = (what: string, xs: Array<{ seconds: number, rssMb: number }>): string => {
    const s = median(xs.map(x => x.seconds))
    return `| ${what} | ${s.toFixed(2)} | ${(size / MB / s).toFixed(0)} | ${Math.max(...xs.map(x => x.rssMb)).toFixed(0)} |`
  }
  console.log(`${what}, CAR ${(size / MB).toFixed(1)} MB, median of ${runs} runs, ${tmpdir()}`)
  console.log('| command | seconds | MB/s | peak RSS MB |')
  console.log('|---|---|---|---|')
  console.log(row('export', exports))
  console.log(row('import', imports))
} finally {
  await rm(work, { recursive: true, force: true })
}
