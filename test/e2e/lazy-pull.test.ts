import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir, mkdtemp, readFile, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MediaType, type Descriptor, type ImageConfig, type Index, type Manifest } from '../../src/oci/index.js'
import { unmountUnder } from '../../src/fs/mountinfo.js'
import { containerdNeeds, startContainerd } from '../../scripts/fixtures/containerd.js'
import { startDaemon, type RunningDaemon } from '../../scripts/fixtures/daemon.js'
import { hasCommand, hasFuse, needs } from '../helpers/env.js'
import { debianImageNeeds, debianPythonImage } from '../../scripts/fixtures/debian-image.js'
import { makeTar } from '../../scripts/fixtures/tar.js'
import { sha256 } from '../../scripts/fixtures/digest.js'
import { repoBlockBytes } from '../../scripts/fixtures/repo-blocks.js'
import { removeWorkDir } from '../../scripts/fixtures/work-dir.js'
import { runCli as cli } from '../../scripts/fixtures/run.js'

/**
 * The lazy pull as users take it, again and again: a 3-layer image (Debian minbase, a base layer
 * of about 200 MB uncompressed; python3; a small app) pushed on one node, pulled by CID on a
 * fresh second node peered with it, and run through a real containerd — five times in a row, with
 * two CPU hogs beside the third and fourth runs. Every layer must mount lazily (`pull
 * --require-lazy`, and no fallback in the node's log), the app prints its line, and the node
 * fetches a small fraction of the image.
 */

const APP = `import json, email, http.client, decimal, asyncio, sqlite3, argparse, logging, csv
print(json.dumps({"app": "ok", "sum": str(decimal.Decimal("1.1") + decimal.Decimal("2.2"))}))
`
const EXPECTED = '{"app": "ok", "sum": "3.3"}'
const RUNS = 5

/** Bytes of blocks a repo holds (for a node that only pulls: what it fetched). */
function repoBytes (root: string): number {
  return repoBlockBytes(root)
}

/** The Debian + python3 layout with a third layer holding /app/app.py (blobs linked, not copied). */
async function withAppLayer (layout: string, out: string): Promise<void> {
  const blobs = join(out, 'blobs', 'sha256')
  await mkdir(blobs, { recursive: true })
  const read = async (d: Descriptor): Promise<Buffer> => await readFile(join(layout, 'blobs', 'sha256', d.digest.slice(7)))
  const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as Index
  const manifest = JSON.parse((await read(index.manifests[0])).toString('utf8')) as Manifest
  const config = JSON.parse((await read(manifest.config)).toString('utf8')) as ImageConfig
  for (const l of manifest.layers) await symlink(join(layout, 'blobs', 'sha256', l.digest.slice(7)), join(blobs, l.digest.slice(7)))
  const tar = makeTar([{ name: 'app/', type: 'dir' }, { name: 'app/app.py', data: APP }])
  const gz = gzipSync(tar)
  const put = async (bytes: Buffer, mediaType: string): Promise<Descriptor> => {
    const digest = sha256(bytes)
    await writeFile(join(blobs, digest.slice(7)), bytes)
    return { mediaType, digest, size: bytes.length }
  }
  const layer = await put(gz, MediaType.OciLayerGzip)
  const cfg = await put(Buffer.from(JSON.stringify({ ...config, rootfs: { type: 'layers', diff_ids: [...config.rootfs.diff_ids, sha256(tar)] } })), MediaType.OciConfig)
  const man = await put(Buffer.from(JSON.stringify({ ...manifest, mediaType: MediaType.OciManifest, config: cfg, layers: [...manifest.layers, layer] })), MediaType.OciManifest)
  await writeFile(join(out, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}')
  await writeFile(join(out, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [{ ...man, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }] }))
}

/** Two busy loops (this machine has two cores) until stopped. */
function cpuHogs (): ChildProcess[] {
  return [0, 1].map(() => spawn('sh', ['-c', 'while :; do :; done'], { stdio: 'ignore' }))
}

describe.skipIf(needs({ ...containerdNeeds, ...debianImageNeeds, fuse: hasFuse, fusermount: hasCommand('fusermount') }))('lazy pull from a peer, five times in a row, some under CPU load', () => {
  let dir: string
  let seed: RunningDaemon | undefined
  let root: string
  let peer: string
  let imageBytes: number

  beforeAll(async () => {
    const image = await debianPythonImage()
    dir = await mkdtemp(join(tmpdir(), 'e2e-lazy-'))
    await withAppLayer(image.layout, join(dir, 'image'))
    seed = await startDaemon({ root: join(dir, 'seed'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    const pushed = await cli(['push', `oci:${join(dir, 'image')}`, '--repo', join(dir, 'seed'), '--json'])
    if (pushed.code !== 0) throw new Error(pushed.stderr)
    const json = JSON.parse(pushed.stdout) as { root: string, images: Array<{ layers: Array<{ size: number }> }> }
    root = json.root
    expect(json.images[0].layers).toHaveLength(3)
    imageBytes = json.images[0].layers.reduce((n, l) => n + l.size, 0)
    peer = (JSON.parse((await cli(['id', '--repo', join(dir, 'seed')])).stdout) as { addresses: string[] }).addresses[0]
  }, 900_000)

  afterAll(async () => {
    await seed?.stop()
    if (dir != null) await removeWorkDir(dir)
  })

  for (let run = 1; run <= RUNS; run++) {
    const loaded = run === 3 || run === 4
    it(`run ${run}${loaded ? ' (two CPU hogs beside it)' : ''}: every layer mounts lazily, the app runs, a small fraction is fetched`, async () => {
      const nodeRoot = join(dir, `node-${run}`)
      const hogs = loaded ? cpuHogs() : []
      const node = await startDaemon({ root: nodeRoot, peers: [peer] })
      const c = await startContainerd({ proxyPlugins: { 'ipfs-estargz': node.address } })
      try {
        const pulled = await cli(['pull', `ipfs://${root}`, '--repo', nodeRoot, '--address', c.address, '--json', '--require-lazy'])
        expect(pulled.code, pulled.stderr).toBe(0)
        const result = JSON.parse(pulled.stdout) as { name: string, layers: Array<{ lazy: boolean }> }
        expect(result.layers.map(l => l.lazy)).toEqual([true, true, true])
        const out = await c.ctr(['run', '--rm', '--snapshotter', 'ipfs-estargz', result.name, `lazy-${run}`, 'python3', '/app/app.py'], { timeoutMs: 300_000 })
        expect(out.trim()).toBe(EXPECTED)
        const fetched = repoBytes(nodeRoot)
        expect(fetched, `fetched ${fetched} of ${imageBytes} bytes`).toBeLessThan(0.2 * imageBytes)
        expect(node.log(), 'no fallback in the node\'s log').not.toMatch(/falling back/)
      } finally {
        for (const h of hogs) h.kill('SIGKILL')
        await c.stop()
        await node.stop()
        await unmountUnder(nodeRoot)
      }
    }, 600_000)
  }
})
