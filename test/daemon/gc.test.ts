import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type * as grpc from '@grpc/grpc-js'
import { CID } from 'multiformats/cid'
import { blockKey, collectBlock, openRepo, walkDag } from '../../src/ipfs/index.js'
import { silentLogger } from '../../src/logging.js'
import { startDaemon, type RunningDaemon } from '../../scripts/fixtures/daemon.js'
import { hasCommand, hasFuse, isRoot, needs } from '../helpers/env.js'
import { makeImage, tagged, writeLayout, allBlobs } from '../../scripts/fixtures/oci-image.js'
import { snapshotsClient, type SnapshotsClient } from '../../scripts/fixtures/snapshots-client.js'
import { chainIds } from '../../scripts/fixtures/digest.js'
import { removeWorkDir } from '../../scripts/fixtures/work-dir.js'
import { runBytes, runCli as cli } from '../../scripts/fixtures/run.js'

/**
 * Pins, `image rm` and garbage collection in a running daemon with real FUSE mounts: three
 * images pushed, one removed, one mounted (and removed: only its mount keeps it), the blockstore
 * capped far below what it holds so the daemon collects by itself.
 */

/** sha256 of what `cat` reads through the mount. */
async function catDigest (path: string): Promise<string> {
  const r = await runBytes('cat', [path])
  if (r.code !== 0) throw new Error(`cat ${path}: ${r.stderr}`)
  return createHash('sha256').update(r.stdout).digest('hex')
}

const sha = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex')

interface Pushed { root: string, layers: Array<{ digest: string, cid: string, tocDigest: string, diffID: string }> }

describe.skipIf(needs({ root: isRoot, fuse: hasFuse, fusermount: hasCommand('fusermount') }))('garbage collection in the daemon (pins, image rm, gc, the cap)', () => {
  let dir: string
  let root: string
  let d: RunningDaemon | undefined
  let client: SnapshotsClient | undefined
  let viewAt: string
  const seeds = ['a', 'b', 'c', 'd']
  const images = seeds.map(seed => makeImage({ seed, layerSize: 300_000 }))
  const pushed: Record<string, Pushed> = {}
  /** Block keys of each image's DAG, and of image b's layers alone. */
  const blocksOf: Record<string, Set<string>> = {}
  const layerBlocksOfB = new Set<string>()
  /** What the files of image b read as (sha256), layer by layer. */
  const expected: Array<[string, string]> = []

  const push = async (seed: string): Promise<Pushed> => {
    const r = await cli(['push', `oci:${join(dir, `img-${seed}`)}`, '--repo', root, '--json', '--chunk-size', '65536'])
    if (r.code !== 0) throw new Error(r.stderr)
    const j = JSON.parse(r.stdout) as { root: string, images: Array<{ layers: Pushed['layers'] }> }
    return { root: j.root, layers: j.images[0].layers }
  }

  /** Every block key stored in the repo (the daemon must be stopped). */
  const storedKeys = async (): Promise<Set<string>> => {
    const repo = await openRepo({ logger: silentLogger() }, { repo: root })
    try {
      const keys = new Set<string>()
      for await (const p of repo.node.localBlockstore.getAll()) keys.add(blockKey(p.cid))
      return keys
    } finally {
      await repo.close()
    }
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gc-test-'))
    root = join(dir, 'root')
    for (let i = 0; i < seeds.length; i++) {
      await writeLayout(join(dir, `img-${seeds[i]}`), allBlobs(images[i]), [tagged(images[i].manifest.descriptor, 'latest')])
    }
    for (const seed of ['a', 'b', 'c']) pushed[seed] = await push(seed)
    // the blocks of each image, read from the repo before the daemon owns it
    const repo = await openRepo({ logger: silentLogger() }, { repo: root })
    try {
      const get = async (cid: CID): Promise<Uint8Array> => await collectBlock(repo.node.localBlockstore.get(cid))
      for (const seed of ['a', 'b', 'c']) {
        blocksOf[seed] = new Set()
        for await (const b of walkDag(CID.parse(pushed[seed].root), get)) blocksOf[seed].add(blockKey(b.cid))
      }
      for (const l of pushed.b.layers) for await (const b of walkDag(CID.parse(l.cid), get)) layerBlocksOfB.add(blockKey(b.cid))
    } finally {
      await repo.close()
    }
    const b = images[1]
    for (let i = 0; i < b.layers.length; i++) {
      expected.push([`dir${i}/big.bin`, sha(Buffer.alloc(300_000, i + 1))])
      expected.push([`dir${i}/file.txt`, sha(`layer ${i} of amd64 b\n`.repeat(1 + i))])
    }
    // a cap far below what the repo holds, checked every second: the daemon collects by itself
    d = await startDaemon({ root, config: '[ipfs]\nmax_blocks_bytes = 1\ngc_interval_sec = 1\n' })
    client = snapshotsClient(d.address)
  }, 300_000)

  afterAll(async () => {
    client?.close()
    if (viewAt != null) spawnSync('umount', [viewAt])
    await d?.stop()
    if (dir != null) await removeWorkDir(dir)
  })

  it('the three images share blocks and have blocks of their own (else this test proves nothing)', () => {
    const shared = [...blocksOf.a].filter(k => blocksOf.c.has(k) || layerBlocksOfB.has(k))
    const own = [...blocksOf.a].filter(k => !blocksOf.c.has(k) && !layerBlocksOfB.has(k))
    expect(shared.length).toBeGreaterThan(0)
    expect(own.length).toBeGreaterThan(0)
  })

  it('pushed images are pinned; unknown pins and images fail with their codes', async () => {
    const pins = await cli(['pin', 'ls', '--repo', root])
    expect(pins.code, pins.stderr).toBe(0)
    const listed = pins.stdout.trim().split('\n').map(l => JSON.parse(l) as { cid: string, type: string, mode: string })
    for (const seed of ['a', 'b', 'c']) expect(listed).toContainEqual(expect.objectContaining({ cid: pushed[seed].root, type: 'recursive', mode: 'complete' }))
    const noImage = await cli(['image', 'rm', 'no-such-image', '--repo', root])
    expect(noImage.code).toBe(1)
    expect(noImage.stderr).toContain('ERR_IMAGE_NOT_IN_REPO')
    const someCid = pushed.a.layers[0].cid
    const noPin = await cli(['pin', 'rm', someCid, '--repo', root])
    expect(noPin.code).toBe(1)
    expect(noPin.stderr).toContain('ERR_PIN_NOT_FOUND')
    expect((await cli(['pin', 'ls', someCid, '--repo', root])).stderr).toContain('ERR_PIN_NOT_FOUND')
  })

  it('mounts image b through FUSE, removes a and b; the daemon collects past its cap and b still reads byte-identical', async () => {
    const c = client as SnapshotsClient
    const chain = chainIds(pushed.b.layers.map(l => l.diffID))
    for (let i = 0; i < chain.length; i++) {
      const err = await c.prepare(`extract-${i} ${chain[i]}`, i === 0 ? '' : chain[i - 1], {
        'containerd.io/snapshot.ref': chain[i],
        'containerd.io/snapshot/remote/urls': `ipfs://${pushed.b.layers[i].cid}`,
        'containerd.io/snapshot/stargz/toc.digest': pushed.b.layers[i].tocDigest
      }).then(() => undefined, (e: grpc.ServiceError) => e)
      expect(err?.code, err?.message).toBe(6) // AlreadyExists: a lazy (remote) snapshot
    }
    const mounts = await c.view('v-b', chain[chain.length - 1])
    viewAt = await mkdtemp(join(dir, 'view-'))
    const m = mounts[0]
    const opts = m.options.filter(o => o !== 'rbind')
    const r = spawnSync('mount', [...(m.type === 'bind' ? ['--bind'] : ['-t', m.type]), ...(opts.length > 0 ? ['-o', opts.join(',')] : []), m.source, viewAt], { encoding: 'utf8' })
    expect(r.status, r.stderr).toBe(0)
    for (const [path, digest] of expected) expect(await catDigest(join(viewAt, path)), path).toBe(digest)

    for (const seed of ['a', 'b']) {
      const rmd = await cli(['image', 'rm', pushed[seed].root, '--repo', root])
      expect(rmd.code, rmd.stderr).toBe(0)
    }
    expect((await cli(['image', 'ls', '--repo', root])).stdout).not.toContain(pushed.a.root)
    // the daemon collects by itself (every second, the cap is 1 byte): wait until nothing is left
    const deadline = Date.now() + 60_000
    for (;;) {
      const dry = await cli(['gc', '--dry-run', '--repo', root])
      expect(dry.code, dry.stderr).toBe(0)
      if ((JSON.parse(dry.stdout) as { blocks: { freed: number } }).blocks.freed === 0) break
      if (Date.now() > deadline) throw new Error(`blocks still collectable after 60 s: ${dry.stdout}`)
      await new Promise(resolve => setTimeout(resolve, 500))
    }
    // the daemon's log is read between awaits (spawnSync blocks this process): wait for the line
    const said = (): boolean => (d as RunningDaemon).log().includes('blockstore over its cap')
    for (let i = 0; i < 100 && !said(); i++) await new Promise(resolve => setTimeout(resolve, 100))
    expect(said()).toBe(true)
    // an explicit gc: the chunks of the mounted layers stay cached
    const gc = await cli(['gc', '--repo', root])
    expect(gc.code, gc.stderr).toBe(0)
    const report = JSON.parse(gc.stdout) as { blocks: { kept: number }, chunks: { kept: number } }
    expect(report.blocks.kept).toBeGreaterThan(0)
    for (const [path, digest] of expected) expect(await catDigest(join(viewAt, path)), path).toBe(digest)
  }, 180_000)

  it('a push, reads through the mount and collections going on at once all complete', async () => {
    const reads = (async () => {
      let n = 0
      for (let round = 0; round < 15; round++) {
        for (const [path, digest] of expected) {
          expect(await catDigest(join(viewAt, path)), path).toBe(digest)
          n++
        }
        await new Promise(resolve => setTimeout(resolve, 50))
      }
      return n
    })()
    const gcs = (async () => {
      for (let i = 0; i < 4; i++) {
        const r = await cli(['gc', '--repo', root])
        expect(r.code, r.stderr).toBe(0)
      }
    })()
    const p = await cli(['push', `oci:${join(dir, 'img-d')}`, '--repo', root, '--json', '--chunk-size', '65536'])
    expect(p.code, p.stderr).toBe(0)
    pushed.d = { root: (JSON.parse(p.stdout) as { root: string }).root, layers: [] }
    await gcs
    expect(await reads).toBe(15 * expected.length)
    expect((await cli(['image', 'ls', '--repo', root])).stdout).toContain(pushed.d.root)
    const again = await cli(['gc', '--repo', root])
    expect(again.code, again.stderr).toBe(0)
    expect((await cli(['image', 'inspect', pushed.d.root, '--offline', '--repo', root])).code).toBe(0)
  }, 180_000)

  it('after the daemon stops: pinned and mounted blocks are all there, the removed image\'s own blocks are gone, shared ones stay', async () => {
    spawnSync('umount', [viewAt])
    client?.close()
    client = undefined
    await d?.stop()
    d = undefined
    const stored = await storedKeys()
    for (const k of blocksOf.c) expect(stored.has(k)).toBe(true)
    for (const k of layerBlocksOfB) expect(stored.has(k)).toBe(true)
    for (const k of blocksOf.a) expect(stored.has(k)).toBe(blocksOf.c.has(k) || layerBlocksOfB.has(k))
    // image b's own blocks that its layers do not hold (its root folder, manifest, config) went too
    const bOwn = [...blocksOf.b].filter(k => !layerBlocksOfB.has(k) && !blocksOf.c.has(k) && !blocksOf.a.has(k))
    expect(bOwn.length).toBeGreaterThan(0)
    for (const k of bOwn) expect(stored.has(k)).toBe(false)
    // image d, pushed while collections ran, is whole
    const repo = await openRepo({ logger: silentLogger() }, { repo: root })
    try {
      let n = 0
      for await (const _ of walkDag(CID.parse(pushed.d.root), async (cid) => await collectBlock(repo.node.localBlockstore.get(cid)))) n++
      expect(n).toBeGreaterThan(5)
    } finally {
      await repo.close()
    }
  }, 120_000)
})
