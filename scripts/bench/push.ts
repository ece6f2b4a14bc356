/**
 * Push benchmark on the Debian+python3 fixture image (two layers, ≥ 150 MB uncompressed):
 *   - `ipfs-estargz push` end to end (convert + publish to the embedded node), fresh repo per run;
 *   - the reference converter (`esgz-ref build`, per layer, conversion only, no publishing);
 *   - block sharing between the image and its rebuild with other timestamps, member-aligned vs
 *     `--kubo-compatible` (fixed 256 KiB leaves).
 * Each run times push and the reference back to back on the same input, and reads the push's peak
 * RSS (GNU time's maximum resident set size), the CLI run as installed (its shebang's node flags). `--many-files` adds a one-layer image of many small
 * files (a tar of /usr/lib/python3, /usr/share/doc and perl from the host). `--compare CLI` runs
 * another build's CLI (e.g. /path/to/older/bin/ipfs-estargz.js) the same way, in the same runs.
 * Prints one table. Goals: push ≥ 1.0× the reference's conversion-only time (push includes
 * publishing), peak RSS ≤ 300 MB; ≥ 50 % of bytes shared with the member-aligned layout.
 *
 * usage: npx tsx scripts/bench/push.ts [--runs 3] [--level 9] [--many-files] [--compare CLI]   (scripts/bench/push.sh builds first)
 */
import '../../src/polyfill.js'
import { spawnSync } from 'node:child_process'
import { createReadStream, createWriteStream, readFileSync, statSync } from 'node:fs'
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

const { values } = parseArgs({ options: { runs: { type: 'string', default: '3' }, level: { type: 'string', default: '9' }, 'many-files': { type: 'boolean', default: false }, compare: { type: 'string' } } })
const runs = Number(values.runs)
const level = values.level as string
const MB = 1e6

function timed (argv: string[]): { seconds: number, stdout: string, rssMB: number } {
  const start = process.hrtime.bigint()
  // GNU time writes the peak RSS (KiB) to the file given with -o
  const rssFile = join(tmpdir(), `bench-push-rss-${process.pid}`)
  const r = spawnSync('/usr/bin/time', ['-f', '%M', '-o', rssFile, ...argv], { encoding: 'utf8', maxBuffer: 1 << 28 })
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed: ${r.stderr}`)
  const rssMB = Number(readFileSync(rssFile, 'utf8').trim().split('\n').pop()) * 1024 / MB
  return { seconds: Number(process.hrtime.bigint() - start) / 1e9, stdout: r.stdout, rssMB }
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

/**
 * A one-layer image of many small files: a tar of the host's /usr/lib/python3*, /usr/share/doc
 * and perl (what a user tried first), gzipped into an OCI layout.
 */
async function manyFilesImage (work: string): Promise<{ layout: string, tar: string, size: number }> {
  const tar = join(work, 'many.tar')
  const dirs = ['usr/lib/python3', 'usr/share/doc', 'usr/share/perl', 'usr/lib/x86_64-linux-gnu/perl-base'].filter(d => { try { return statSync(`/${d}`).isDirectory() } catch { return false } })
  const t = spawnSync('tar', ['-C', '/', '-cf', tar, ...dirs], { encoding: 'utf8' })
  if (t.status !== 0) throw new Error(`tar: ${t.stderr}`)
  const bytes = readFileSync(tar)
  const { blob, jsonBlob, tagged, writeLayout } = await import('../fixtures/oci-image.js')
  const { sha256 } = await import('../fixtures/digest.js')
  const { MediaType } = await import('../../src/oci/media-types.js')
  const { gzipSync } = await import('node:zlib')
  const layer = blob(MediaType.OciLayerGzip, gzipSync(bytes, { level: 1 }))
  const config = jsonBlob(MediaType.OciConfig, { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha256(bytes)] } })
  const manifest = jsonBlob(MediaType.OciManifest, { schemaVersion: 2, mediaType: MediaType.OciManifest, config: config.descriptor, layers: [layer.descriptor] })
  const layout = join(work, 'many-layout')
  await writeLayout(layout, [layer, config, manifest], [tagged(manifest.descriptor, 'latest')])
  return { layout, tar, size: bytes.length }
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

  const clis: Array<[string, string]> = [['ipfs-estargz push', cliPath], ...(values.compare != null ? [[`${values.compare} push`, values.compare] as [string, string]] : [])]
  const rows = new Map<string, { push: number[], ref: number[], rss: number[] }>()
  const measure = async (label: string, layout: string, layerTars: string[]): Promise<void> => {
    for (const [name, cli] of clis) {
      const row = { push: [] as number[], ref: [] as number[], rss: [] as number[] }
      rows.set(`${label}: ${name}`, row)
      for (let r = 0; r < runs; r++) {
        const repo = join(work, `repo${r}`)
        // run as installed: the executable, whose shebang sets the node flags the package ships with
        const t = timed([cli, 'push', `oci:${layout}`, '--repo', repo, '--level', level])
        await rm(repo, { recursive: true, force: true })
        let total = 0
        for (const [i, tar] of layerTars.entries()) total += timed([esgzRef(), 'build', tar, join(work, `ref${i}.esgz`), '--level', level, '--chunk-size', String(4 << 20)]).seconds
        row.push.push(t.seconds)
        row.ref.push(total)
        row.rss.push(t.rssMB)
      }
    }
  }
  await measure('Debian + python3', image.layout, tars)
  if (values['many-files']) {
    const { layout, tar, size } = await manyFilesImage(work)
    await measure(`many small files (${(size / MB).toFixed(0)} MB tar)`, layout, [tar])
  }

  const aligned = join(work, 'aligned')
  const a1 = timed([process.execPath, cliPath, 'push', `oci:${image.layout}`, '--repo', aligned, '--level', level]).stdout.trim()
  const a2 = timed([process.execPath, cliPath, 'push', `oci:${image.rebuiltLayout}`, '--repo', aligned, '--level', level]).stdout.trim()
  const kubo = join(work, 'kubo')
  const k1 = timed([process.execPath, cliPath, 'push', `oci:${image.layout}`, '--repo', kubo, '--level', level, '--kubo-compatible']).stdout.trim()
  const k2 = timed([process.execPath, cliPath, 'push', `oci:${image.rebuiltLayout}`, '--repo', kubo, '--level', level, '--kubo-compatible']).stdout.trim()
  const sharedAligned = sharedFraction(await blocksOf(aligned, a1), await blocksOf(aligned, a2))
  const sharedKubo = sharedFraction(await blocksOf(kubo, k1), await blocksOf(kubo, k2))

  console.log(`\nDebian bookworm minbase + python3: ${manifest.layers.length} layers, ${(uncompressed / MB).toFixed(1)} MB uncompressed; gzip level ${level}; ${runs} runs each, medians\n`)
  console.log('| input: what | push s | esgz-ref build s (same runs) | reference ÷ push (goal ≥ 1.0) | push peak RSS MB (goal ≤ 300) |')
  console.log('| --- | --- | --- | --- | --- |')
  for (const [name, row] of rows) {
    const ratios = row.push.map((p, i) => row.ref[i] / p)
    console.log(`| ${name} | ${median(row.push).toFixed(2)} | ${median(row.ref).toFixed(2)} | ${median(ratios).toFixed(2)} | ${Math.max(...row.rss).toFixed(0)} |`)
  }
  console.log('\n| layout | bytes of the rebuilt image already stored (dedup) |')
  console.log('| --- | --- |')
  console.log(`| member-aligned (default) | ${(sharedAligned * 100).toFixed(1)} % (goal ≥ 50 %) |`)
  console.log(`| --kubo-compatible (256 KiB fixed) | ${(sharedKubo * 100).toFixed(1)} % |`)
} finally {
  await new Promise(resolve => setTimeout(resolve, 1500))
  await rm(work, { recursive: true, force: true })
}
