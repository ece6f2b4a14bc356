import { spawn, spawnSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { collectBlock } from '../../src/ipfs/dag-reader.js'
import { createLocalBlockstore } from '../../src/ipfs/local-blockstore.js'
import { walkDag } from '../../src/ipfs/walk.js'
import { MediaType } from '../../src/oci/media-types.js'
import { blob, jsonBlob, tagged, writeLayout } from '../../scripts/fixtures/oci-image.js'
import { fixtureBytes, makeTar } from '../../scripts/fixtures/tar.js'
import { sha256 } from '../../scripts/fixtures/digest.js'
import { cliPath } from '../../scripts/fixtures/tools.js'

/**
 * `kill -9` during a push, at a random point: afterwards the repo opens, every listed image is
 * whole, every stored block verifies against its CID, and the push runs to the end. The default
 * suite runs 2 trials; `CRASH_TRIALS=10 npx vitest run test/cli/crash-safety.test.ts` (or
 * `npm run test:reliability`) runs more.
 */
const TRIALS = Number(process.env.CRASH_TRIALS ?? 2)

function cli (args: string[]): { code: number, stdout: string, stderr: string } {
  // Bounded, so a hung command fails its trial with its output instead of stalling the file.
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', maxBuffer: 1 << 26, timeout: 100_000, killSignal: 'SIGKILL' })
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.error === undefined ? r.stderr : `${r.error.message}\n${r.stderr}` }
}

/** An image of many small files (two blocks each) and a few large ones: a push of about a second. */
async function manyFilesImage (dir: string, seed: number): Promise<void> {
  const entries: Parameters<typeof makeTar>[0] = [{ name: 'd/', type: 'dir' }]
  for (let i = 0; i < 600; i++) entries.push({ name: `d/f${i}`, data: fixtureBytes(seed * 100_000 + i, 200 + (i * 37) % 3000) })
  entries.push({ name: 'd/big', data: fixtureBytes(seed * 100_000 + 90_000, 3 << 20) })
  const tar = makeTar(entries)
  const layer = blob(MediaType.OciLayerGzip, gzipSync(tar, { level: 1 }))
  const config = jsonBlob(MediaType.OciConfig, { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha256(tar)] } })
  const manifest = jsonBlob(MediaType.OciManifest, { schemaVersion: 2, mediaType: MediaType.OciManifest, config: config.descriptor, layers: [layer.descriptor] })
  await writeLayout(dir, [layer, config, manifest], [tagged(manifest.descriptor, 'latest')])
}

/** Every stored block hashes to its multihash; every listed image's DAG is whole. Returns the block count. */
async function checkRepo (repo: string, listed: string[]): Promise<number> {
  const store = await createLocalBlockstore(repo)
  await store.open()
  try {
    let n = 0
    for await (const { cid, bytes } of store.getAll()) {
      const got = await collectBlock(bytes)
      expect(cid.multihash.code).toBe(0x12)
      expect(Buffer.from(createHash('sha256').update(got).digest()).equals(Buffer.from(cid.multihash.digest)), `block ${cid.toString()} does not verify`).toBe(true)
      n++
    }
    for (const root of listed) {
      for await (const b of walkDag(CID.parse(root), async (c) => await collectBlock(store.get(c)))) expect(Digest.decode(b.cid.multihash.bytes).code).toBe(0x12)
    }
    return n
  } finally {
    await store.close()
  }
}

const listed = (repo: string): string[] => {
  const ls = cli(['image', 'ls', '--repo', repo])
  expect(ls.code, ls.stderr).toBe(0)
  return ls.stdout.trim() === '' ? [] : ls.stdout.trim().split('\n').map(l => (JSON.parse(l) as { root: string }).root)
}

describe('kill -9 during a push', () => {
  let dir: string
  let pushMs = 2000
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'crash-'))
    await manyFilesImage(join(dir, 'a'), 1)
    await manyFilesImage(join(dir, 'b'), 2)
    // How long a whole push takes here: the kills land anywhere in it.
    const t0 = Date.now()
    const r = cli(['push', `oci:${join(dir, 'a')}`, '--repo', join(dir, 'timing'), '--level', '1'])
    expect(r.code, r.stderr).toBe(0)
    pushMs = Date.now() - t0
  }, 120_000)
  afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

  // One test per trial: each has its own time budget, and the report counts the trials passed.
  for (let trial = 0; trial < TRIALS; trial++) {
    it(`trial ${trial + 1}/${TRIALS}: the repo opens, lists only whole images, holds only verifying blocks, and takes the push again`, async () => {
      const repo = join(dir, `repo${trial}`)
      // One image complete before (it must survive), the other interrupted.
      const first = cli(['push', `oci:${join(dir, 'a')}`, '--repo', repo, '--level', '1'])
      expect(first.code, first.stderr).toBe(0)
      const kept = first.stdout.trim()
      const child = spawn(process.execPath, [cliPath, 'push', `oci:${join(dir, 'b')}`, '--repo', repo, '--level', '1'], { stdio: 'ignore' })
      // Listened for from the start: a push that ends before the kill lands has already exited.
      const exited = new Promise(resolve => child.once('exit', resolve))
      const delay = 100 + Math.floor(Math.random() * pushMs)
      await new Promise(resolve => setTimeout(resolve, delay))
      child.kill('SIGKILL')
      await exited

      const images = listed(repo)
      expect(images).toContain(kept)
      expect(images.length === 1 || images.length === 2, `trial ${trial} (kill after ${delay} ms): ${images.join(',')}`).toBe(true)
      const blocks = await checkRepo(repo, images)
      expect(blocks).toBeGreaterThan(0)

      const again = cli(['push', `oci:${join(dir, 'b')}`, '--repo', repo, '--level', '1'])
      expect(again.code, again.stderr).toBe(0)
      expect(listed(repo).sort()).toEqual([kept, again.stdout.trim()].sort())
      await checkRepo(repo, listed(repo))
      await rm(repo, { recursive: true, force: true })
    }, 240_000)
  }
})
