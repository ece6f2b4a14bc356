/**
 * Push benchmark on the Debian+python3 fixture image (two layers, ≥ 150 MB uncompressed):
 *   - `ipfs-estargz push` end to end (convert + publish to the embedded node), fresh repo per run;
 *   - the reference converter (`esgz-ref build`, per layer, conversion only, no publishing);
 *   - block sharing between the image and its rebuild with other timestamps, member-aligned vs
 *     `--kubo-compatible` (fixed 256 KiB leaves).
 * Prints one table. Goals (issue 3): push ≥ 0.8× the reference's conversion-only throughput;
 * ≥ 50 % of bytes shared with the member-aligned layout.
 *
 * usage: npx tsx scripts/bench/push.ts [--runs 3] [--level 9]   (scripts/bench/push.sh builds first)
 */
import '../../src/polyfill.js'
import { spawnSync } from 'node:child_process'
import { createReadStream, createWriteStream } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { parseArgs } from 'node:util'
import { createGunzip } from 'node:zlib'
import { CID } from 'multiformats/cid'
import { collectBlock, createNode, walkDag } from '../../src/ipfs/index.js'
import { silentLogger } from '../../src/logging.js'
import { debianPythonImage } from '../fixtures/debian-image.js'
import { cliPath, esgzRef } from '../fixtures/tools.js'

const { values } = parseArgs({ options: { runs: { type: 'string', default: '3' }, level: { type: 'string', default: '9' } } })
const runs = Number(values.runs)
const level = values.level as string
const MB = 1e6

function timed (argv: string[]): { seconds: number, stdout: string } {
  const start = process.hrtime.bigint()
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', maxBuffer: 1 << 28 })
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed: ${r.stderr}`)
  return { seconds: Number(process.hrtime.bigint() - start) / 1e9, stdout: r.stdout }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

async function blocksOf (repo: string, root: string): Promise<Map<string, number>> {
  const node = await createNode({ repo, logger: silentLogger() })
  try {
    const out = new Map<string, number>()
    for await (const b of walkDag(CID.parse(root), async (c) => await collectBlock(node.localBlockstore.get(c)))) out.set(b.cid.toString(), b.bytes?.length ?? 0)
    return out
  } finally {
    await node.stop()
  }
}

function sharedFraction (a: Map<string, number>, b: Map<string, number>): number {
  let total = 0
  let common = 0
  for (const [cid, n] of b) { total += n; if (a.has(cid)) common += n }
  return common / total
}

const image = await debianPythonImage()
const work = await mkdtemp(join(tmpdir(), 'bench-push-'))
try {
  // The layers, uncompressed, for the reference (and the size the throughput is measured on).
  const index = JSON.parse(await readFile(join(image.layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> }
  const blob = (d: string): string => join(image.layout, 'blobs', 'sha256', d.slice(7))
  const manifest = JSON.parse(await readFile(blob(index.manifests[0].digest), 'utf8')) as { layers: Array<{ digest: string }> }
  const tars: string[] = []
  let uncompressed = 0
  for (const [i, l] of manifest.layers.entries()) {
    const tar = join(work, `layer${i}.tar`)
    await pipeline(createReadStream(blob(l.digest)), createGunzip(), createWriteStream(tar))
    uncompressed += (await import('node:fs')).statSync(tar).size
    tars.push(tar)
  }

  const ours: number[] = []
  const ref: number[] = []
  for (let r = 0; r < runs; r++) {
    const repo = join(work, `repo${r}`)
    ours.push(timed([process.execPath, cliPath, 'push', `oci:${image.layout}`, '--repo', repo, '--level', level]).seconds)
    await rm(repo, { recursive: true, force: true })
    let total = 0
    for (const [i, tar] of tars.entries()) total += timed([esgzRef(), 'build', tar, join(work, `ref${i}.esgz`), '--level', level, '--chunk-size', String(4 << 20)]).seconds
    ref.push(total)
  }

  const aligned = join(work, 'aligned')
  const a1 = timed([process.execPath, cliPath, 'push', `oci:${image.layout}`, '--repo', aligned, '--level', level]).stdout.trim()
  const a2 = timed([process.execPath, cliPath, 'push', `oci:${image.rebuiltLayout}`, '--repo', aligned, '--level', level]).stdout.trim()
  const kubo = join(work, 'kubo')
  const k1 = timed([process.execPath, cliPath, 'push', `oci:${image.layout}`, '--repo', kubo, '--level', level, '--kubo-compatible']).stdout.trim()
  const k2 = timed([process.execPath, cliPath, 'push', `oci:${image.rebuiltLayout}`, '--repo', kubo, '--level', level, '--kubo-compatible']).stdout.trim()
  const sharedAligned = sharedFraction(await blocksOf(aligned, a1), await blocksOf(aligned, a2))
  const sharedKubo = sharedFraction(await blocksOf(kubo, k1), await blocksOf(kubo, k2))

  const mbps = (s: number): string => (uncompressed / MB / s).toFixed(1)
  console.log(`\nDebian bookworm minbase + python3: ${manifest.layers.length} layers, ${(uncompressed / MB).toFixed(1)} MB uncompressed; gzip level ${level}; ${runs} runs each, medians\n`)
  console.log('| what | seconds | MB/s (uncompressed) |')
  console.log('| --- | --- | --- |')
  console.log(`| ipfs-estargz push (convert + publish to IPFS) | ${median(ours).toFixed(2)} | ${mbps(median(ours))} |`)
  console.log(`| esgz-ref build, per layer (convert only) | ${median(ref).toFixed(2)} | ${mbps(median(ref))} |`)
  console.log(`| ratio push / reference | | ${(median(ref) / median(ours)).toFixed(2)} (goal ≥ 0.8) |`)
  console.log('\n| layout | bytes of the rebuilt image already stored (dedup) |')
  console.log('| --- | --- |')
  console.log(`| member-aligned (default) | ${(sharedAligned * 100).toFixed(1)} % (goal ≥ 50 %) |`)
  console.log(`| --kubo-compatible (256 KiB fixed) | ${(sharedKubo * 100).toFixed(1)} % |`)
} finally {
  await new Promise(resolve => setTimeout(resolve, 1500))
  await rm(work, { recursive: true, force: true })
}
