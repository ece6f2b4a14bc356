import { spawn } from 'node:child_process'
import { cp } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CarWriter } from '@ipld/car/writer'
import * as dagPb from '@ipld/dag-pb'
import { UnixFS } from 'ipfs-unixfs'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 as mhSha256 } from 'multiformats/hashes/sha2'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readCar } from '../../src/bundle/index.js'
import { IndexStore, IpfsImageReader, collectBlock, createNode, walkDag } from '../../src/ipfs/index.js'
import { silentLogger } from '../../src/logging.js'
import { resolveImages } from '../../src/oci/index.js'
import { allBlobs, makeImage, tagged, writeLayout } from '../../scripts/fixtures/oci-image.js'
import { cliPath } from '../../scripts/fixtures/tools.js'
import { startDaemon } from '../../scripts/fixtures/daemon.js'
import * as Digest from 'multiformats/hashes/digest'
import { hasFuse, isRoot, needs } from '../helpers/env.js'
import { createLocalBlockstore } from '../../src/ipfs/local-blockstore.js'
import { blockKeys, keyOf } from '../../scripts/fixtures/repo-blocks.js'
import { runBytes, runCli, type RunResult } from '../../scripts/fixtures/run.js'

interface Run { code: number, stdout: string, stderr: string }

async function cli (args: string[], opts: { input?: Uint8Array, cwd?: string } = {}): Promise<Run> {
  return await runCli(args, opts)
}

/** The CLI with binary stdout (export -o -). */
async function cliBytes (args: string[]): Promise<RunResult<Buffer>> {
  return await runBytes(process.execPath, [cliPath, ...args])
}

async function carOf (bytes: Uint8Array): Promise<{ roots: CID[], blocks: Array<{ cid: CID, bytes: Uint8Array }> }> {
  const car = await readCar((async function * () { yield bytes })())
  const blocks = []
  for await (const b of car.blocks) blocks.push({ cid: b.cid, bytes: b.bytes })
  return { roots: car.roots, blocks }
}

async function writeCar (roots: CID[], blocks: Array<{ cid: CID, bytes: Uint8Array }>): Promise<Uint8Array> {
  const { writer, out } = CarWriter.create(roots)
  const parts: Uint8Array[] = []
  const done = (async () => { for await (const p of out) parts.push(p) })()
  for (const b of blocks) await writer.put(b)
  await writer.close()
  await done
  return Buffer.concat(parts)
}

/** Every block of a repo by multihash (the block count the tests compare). */
async function blockFiles (repo: string): Promise<string[]> {
  return await blockKeys(repo)
}

/** What a repo shows: its image list and its block files. */
async function snapshot (repo: string): Promise<{ images: string, blocks: string[] }> {
  const ls = await cli(['image', 'ls', '--repo', repo])
  expect(ls.code, ls.stderr).toBe(0)
  return { images: ls.stdout, blocks: await blockFiles(repo) }
}

/** Every block under a root in a repo, CID → sha256 of its bytes. */
async function dagOf (repo: string, root: string): Promise<Map<string, string>> {
  const node = await createNode({ repo, logger: silentLogger() })
  try {
    const out = new Map<string, string>()
    for await (const b of walkDag(CID.parse(root), async (c) => await collectBlock(node.localBlockstore.get(c)))) {
      out.set(b.cid.toString(), createHash('sha256').update(b.bytes as Uint8Array).digest('hex'))
    }
    return out
  } finally {
    await node.stop()
  }
}

interface PushJson { root: string, descriptor: string, images: Array<{ layers: Array<{ digest: string, cid: string }>, config: { digest: string, cid: string }, manifest: { digest: string, cid: string } }> }
interface ImportJson { images: Array<{ root: string, name: string, descriptor?: string, blobs: number, existing: boolean }>, blocks: number, added: number, ignored: number }

describe('ipfs-estargz export / import (CAR bundles)', () => {
  let dir: string
  let repoA: string
  let pushed: PushJson
  let pushed2: PushJson
  let car: Uint8Array
  let carPath: string

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bundle-test-'))
    repoA = join(dir, 'a')
    // two images sharing nothing but structure; the first with layers of several leaves
    for (const [n, seed, size] of [[1, 'one', 3_000_000], [2, 'two', 500_000]] as const) {
      const img = makeImage({ seed, layerCount: 2, layerSize: size, noise: true })
      const layout = join(dir, `layout${n}`)
      await writeLayout(layout, allBlobs(img), [tagged(img.manifest.descriptor, 'v1')])
      const r = await cli(['push', `oci:${layout}`, '--repo', repoA, '--json', '--level', '1'])
      expect(r.code, r.stderr).toBe(0)
      if (n === 1) pushed = JSON.parse(r.stdout) as PushJson
      else pushed2 = JSON.parse(r.stdout) as PushJson
    }
    carPath = join(dir, 'one.car')
    const r = await cli(['export', pushed.root, '-o', carPath, '--repo', repoA])
    expect(r.code, r.stderr).toBe(0)
    car = await readFile(carPath)
  }, 120_000)

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('exports one CARv1 with the image root and its descriptor as roots, every block of the image once', async () => {
    const { roots, blocks } = await carOf(car)
    expect(roots.map(String)).toEqual([pushed.root, pushed.descriptor])
    const keys = blocks.map(b => b.cid.toString())
    expect(new Set(keys).size).toBe(keys.length)
    const want = new Map([...await dagOf(repoA, pushed.root), ...await dagOf(repoA, pushed.descriptor)])
    expect(new Set(keys)).toEqual(new Set(want.keys()))
    for (const b of blocks) expect(createHash('sha256').update(b.bytes).digest('hex')).toBe(want.get(b.cid.toString()))
    expect((await stat(carPath)).mode & 0o777).toBe(0o600)
  })

  it('imports into another repo: the image listed, every block and blob identical, digests mapped to the same CIDs', async () => {
    const repoB = join(dir, 'b')
    const r = await cli(['import', carPath, '--repo', repoB, '--json'])
    expect(r.code, r.stderr).toBe(0)
    const res = JSON.parse(r.stdout) as ImportJson
    expect(res.images).toEqual([expect.objectContaining({ root: pushed.root, descriptor: pushed.descriptor, name: `ipfs://${pushed.root}`, existing: false })])
    expect(res.ignored).toBe(0)
    expect(await dagOf(repoB, pushed.root)).toEqual(await dagOf(repoA, pushed.root))
    const ls = await cli(['image', 'ls', '--repo', repoB])
    const listed = ls.stdout.trim().split('\n').map(l => JSON.parse(l) as { root: string, descriptor?: string, meta?: Record<string, unknown> })
    expect(listed).toEqual([expect.objectContaining({ root: pushed.root, descriptor: pushed.descriptor, meta: expect.objectContaining({ tag: 'latest', source: 'bundle' }) })])
    const node = await createNode({ repo: repoB, logger: silentLogger() })
    try {
      const index = IndexStore.open(repoB, { pins: node.helia.pins, localBlockstore: node.localBlockstore, logger: silentLogger() })
      try {
        expect(await index.pins.get(CID.parse(pushed.root))).toMatchObject({ depth: Infinity })
        const img = pushed.images[0]
        for (const b of [...img.layers, img.config, img.manifest]) expect(index.digests.get(b.digest)?.toString()).toBe(b.cid)
      } finally {
        index.close()
      }
      // every blob read back from B offline hashes to its digest
      const reader = await IpfsImageReader.open(node.blocks, pushed.root, { offline: true })
      const resolved = await resolveImages(reader)
      for (const l of resolved.images[0].layers) {
        const h = createHash('sha256')
        for await (const c of await reader.fetch(l)) h.update(c)
        expect(`sha256:${h.digest('hex')}`).toBe(l.digest)
      }
    } finally {
      await node.stop()
    }
    // importing again: the image is there already, nothing changes
    const before = await snapshot(repoB)
    const again = await cli(['import', carPath, '--repo', repoB, '--json'])
    expect(again.code, again.stderr).toBe(0)
    expect((JSON.parse(again.stdout) as ImportJson).images[0].existing).toBe(true)
    expect(await snapshot(repoB)).toEqual(before)
    expect(await readdir(join(repoB, 'import-staging'))).toEqual([])
  })

  it('exports several images by name and CID through stdout, shared blocks once; import reads stdin', async () => {
    const names = (await cli(['image', 'ls', '--repo', repoA])).stdout.trim().split('\n').map(l => JSON.parse(l) as { root: string, name: string })
    const name2 = names.find(i => i.root === pushed2.root)?.name as string
    expect(name2).toContain('layout2')
    const r = await cliBytes(['export', pushed.root, name2, `ipfs://${pushed.root}`, '-o', '-', '--repo', repoA])
    expect(r.code, r.stderr).toBe(0)
    const { roots, blocks } = await carOf(r.stdout)
    expect(roots.map(String)).toEqual([pushed.root, pushed.descriptor, pushed2.root, pushed2.descriptor])
    const keys = blocks.map(b => b.cid.toString())
    expect(new Set(keys).size).toBe(keys.length)
    // the images share blocks (the oci-layout file at least): each is written once
    const one = await dagOf(repoA, pushed.root)
    const two = await dagOf(repoA, pushed2.root)
    expect([...one.keys()].filter(k => two.has(k)).length).toBeGreaterThan(0)
    const all = new Set([...one.keys(), ...two.keys(), ...(await dagOf(repoA, pushed.descriptor)).keys(), ...(await dagOf(repoA, pushed2.descriptor)).keys()])
    expect(new Set(keys)).toEqual(all)
    const repoC = join(dir, 'c')
    const imp = await cli(['import', '-', '--repo', repoC, '--json'], { input: r.stdout })
    expect(imp.code, imp.stderr).toBe(0)
    expect((JSON.parse(imp.stdout) as ImportJson).images.map(i => i.root)).toEqual([pushed.root, pushed2.root])
    expect(await dagOf(repoC, pushed2.root)).toEqual(await dagOf(repoA, pushed2.root))
  })

  /** A CAR rebuilt from this one's blocks by `edit`. */
  async function edited (edit: (c: { roots: CID[], blocks: Array<{ cid: CID, bytes: Uint8Array }> }) => Promise<void> | void): Promise<Uint8Array> {
    const c = await carOf(car)
    await edit(c)
    return await writeCar(c.roots, c.blocks)
  }

  /** A raw leaf of the first layer of image 1. */
  async function layerLeaf (): Promise<CID> {
    const layer = CID.parse(pushed.images[0].layers[0].cid)
    for (const cid of (await dagOf(repoA, layer.toString())).keys()) {
      const c = CID.parse(cid)
      if (c.code === raw.code) return c
    }
    throw new Error('no raw leaf')
  }

  describe('refused bundles leave the repo as it was', () => {
    let target: string
    beforeAll(async () => {
      // a repo that holds an image already
      target = join(dir, 'target')
      const two = join(dir, 'two.car')
      expect((await cli(['export', pushed2.root, '-o', two, '--repo', repoA])).code).toBe(0)
      const r = await cli(['import', two, '--repo', target])
      expect(r.code, r.stderr).toBe(0)
    }, 60_000)

    async function refused (bytes: Uint8Array, code: string): Promise<string> {
      const before = await snapshot(target)
      expect(before.images).toContain(pushed2.root)
      const file = join(dir, `bad-${code}-${Math.random().toString(36).slice(2)}.car`)
      await writeFile(file, bytes)
      const r = await cli(['import', file, '--repo', target])
      expect(r.code, r.stderr).toBe(1)
      expect(r.stderr).toContain(`(${code})`)
      expect(r.stdout).toBe('')
      expect(await snapshot(target)).toEqual(before)
      expect(await readdir(join(target, 'import-staging'))).toEqual([])
      return r.stderr
    }

    it('one flipped byte inside a layer block: ERR_BUNDLE_BLOCK_MISMATCH', async () => {
      const leaf = await layerLeaf()
      const { blocks } = await carOf(car)
      const bytes = blocks.find(b => b.cid.equals(leaf))?.bytes as Uint8Array
      const at = Buffer.from(car).indexOf(Buffer.from(bytes))
      expect(at).toBeGreaterThan(0)
      const bad = Buffer.from(car)
      bad[at + (bytes.length >> 1)] ^= 0x01
      expect(await refused(bad, 'ERR_BUNDLE_BLOCK_MISMATCH')).toContain(leaf.toString())
    })

    it('a truncated bundle: ERR_BUNDLE_TRUNCATED', async () => {
      const leaf = await layerLeaf()
      const { blocks } = await carOf(car)
      const bytes = blocks.find(b => b.cid.equals(leaf))?.bytes as Uint8Array
      const at = Buffer.from(car).indexOf(Buffer.from(bytes))
      await refused(car.subarray(0, at + (bytes.length >> 1)), 'ERR_BUNDLE_TRUNCATED')
      await refused(car.subarray(0, 20), 'ERR_BUNDLE_TRUNCATED')
    })

    it('one layer block missing: ERR_BUNDLE_INCOMPLETE, naming it', async () => {
      const leaf = await layerLeaf()
      const bad = await edited(c => { c.blocks = c.blocks.filter(b => !b.cid.equals(leaf)) })
      expect(await refused(bad, 'ERR_BUNDLE_INCOMPLETE')).toContain(leaf.toString())
    })

    it('a layout entry naming another blob than its digest (every CID consistent): ERR_BUNDLE_BLOB_DIGEST', async () => {
      // swap the CIDs of the two layers under blobs/sha256/, and rebuild the directories above
      const bad = await edited(async c => {
        const get = (cid: CID): Uint8Array => c.blocks.find(b => b.cid.equals(cid))?.bytes as Uint8Array
        const rebuild = (node: dagPb.PBNode): { cid: CID, bytes: Uint8Array } => {
          const bytes = dagPb.encode(dagPb.prepare(node))
          return { cid: CID.createV1(dagPb.code, Digest.create(mhSha256.code, createHash('sha256').update(bytes).digest())), bytes }
        }
        const [l0, l1] = pushed.images[0].layers
        const root = dagPb.decode(get(c.roots[0]))
        const blobsLink = root.Links.find(l => l.Name === 'blobs') as dagPb.PBLink
        const blobs = dagPb.decode(get(blobsLink.Hash))
        const shaLink = blobs.Links.find(l => l.Name === 'sha256') as dagPb.PBLink
        const sha = dagPb.decode(get(shaLink.Hash))
        const newSha = rebuild({ ...sha, Links: sha.Links.map(l => l.Name === l0.digest.slice(7) ? { ...l, Hash: CID.parse(l1.cid) } : l.Name === l1.digest.slice(7) ? { ...l, Hash: CID.parse(l0.cid) } : l) })
        const newBlobs = rebuild({ ...blobs, Links: blobs.Links.map(l => l.Name === 'sha256' ? { ...l, Hash: newSha.cid } : l) })
        const newRoot = rebuild({ ...root, Links: root.Links.map(l => l.Name === 'blobs' ? { ...l, Hash: newBlobs.cid } : l) })
        expect(UnixFS.unmarshal(root.Data as Uint8Array).type).toBe('directory')
        c.blocks.push(newSha, newBlobs, newRoot)
        c.roots = [newRoot.cid]
      })
      await refused(bad, 'ERR_BUNDLE_BLOB_DIGEST')
    })

    it('roots that are not images: ERR_BUNDLE_NOT_AN_IMAGE (a layer, a raw block, a descriptor without its layout, no root)', async () => {
      const layer = CID.parse(pushed.images[0].layers[0].cid)
      await refused(await edited(c => { c.roots = [layer] }), 'ERR_BUNDLE_NOT_AN_IMAGE')
      const junk = Buffer.from('not an image')
      const junkCid = CID.createV1(raw.code, await mhSha256.digest(junk))
      await refused(await edited(c => { c.roots = [junkCid]; c.blocks.push({ cid: junkCid, bytes: junk }) }), 'ERR_BUNDLE_NOT_AN_IMAGE')
      await refused(await edited(c => { c.roots = [CID.parse(pushed.descriptor)] }), 'ERR_BUNDLE_NOT_AN_IMAGE')
      await refused(await edited(c => { c.roots = [] }), 'ERR_BUNDLE_NOT_AN_IMAGE')
    })

    it('a block whose CID names a hash we cannot check: ERR_BUNDLE_UNSUPPORTED_HASH', async () => {
      const bytes = Buffer.from('blake2b')
      const cid = CID.createV1(raw.code, Digest.create(0xb220, createHash('sha256').update(bytes).digest()))
      await refused(await edited(c => { c.blocks.push({ cid, bytes }) }), 'ERR_BUNDLE_UNSUPPORTED_HASH')
    })

    it('not a CAR, and a section over the size limit: ERR_BUNDLE_FORMAT, ERR_BUNDLE_LIMIT', async () => {
      await refused(Buffer.from(JSON.stringify({ this: 'is json', not: 'a CAR', pad: 'x'.repeat(400) })), 'ERR_BUNDLE_FORMAT')
      const header = car.subarray(0, 1 + car[0])
      // a section that says it is 100 MB long
      await refused(Buffer.concat([header, Buffer.from([0x80, 0x80, 0x80, 0x30]), Buffer.alloc(64)]), 'ERR_BUNDLE_LIMIT')
    })
  })

  it('a bundle with blocks no root reaches: the images imported, those blocks dropped', async () => {
    const extra = Buffer.from('an unrelated block')
    const extraCid = CID.createV1(raw.code, await mhSha256.digest(extra))
    const file = join(dir, 'extra.car')
    await writeFile(file, await edited(c => { c.blocks.splice(3, 0, { cid: extraCid, bytes: extra }) }))
    const repo = join(dir, 'extra')
    const r = await cli(['import', file, '--repo', repo, '--json'])
    expect(r.code, r.stderr).toBe(0)
    expect((JSON.parse(r.stdout) as ImportJson).ignored).toBe(1)
    expect(r.stderr).toContain('1 blocks of the bundle belong to no image')
    const node = await createNode({ repo, logger: silentLogger() })
    try {
      expect(await node.localBlockstore.has(extraCid)).toBe(false)
      expect(await node.localBlockstore.has(CID.parse(pushed.root))).toBe(true)
    } finally {
      await node.stop()
    }
  })

  it('export refuses an image with a block missing from the repo, an unknown name or a non-image CID, and leaves no file', async () => {
    const broken = join(dir, 'broken')
    await cp(repoA, broken, { recursive: true })
    const leaf = await layerLeaf()
    // remove the leaf from the copy's blockstore
    const store = await createLocalBlockstore(broken)
    await store.open()
    expect(await store.has(leaf)).toBe(true)
    await store.delete(leaf)
    await store.close()
    expect(await blockFiles(broken)).not.toContain(keyOf(leaf))
    const out = join(dir, 'out')
    await cp(carPath, join(dir, 'keep.car'))
    const target = join(dir, 'keep.car')
    const r = await cli(['export', pushed.root, '-o', target, '--repo', broken])
    expect(r.code, r.stderr).toBe(1)
    expect(r.stderr).toContain('(ERR_EXPORT_INCOMPLETE)')
    expect(r.stderr).toContain(leaf.toString())
    expect(Buffer.compare(await readFile(target), car)).toBe(0) // the file that was there is untouched
    expect((await readdir(dir)).filter(f => f.endsWith('.tmp'))).toEqual([])
    const unknown = await cli(['export', 'no-such-image:1', '-o', out, '--repo', repoA])
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toContain('(ERR_UNKNOWN_IMAGE)')
    const layer = await cli(['export', pushed.images[0].layers[0].cid, '-o', out, '--repo', repoA])
    expect(layer.code).toBe(1)
    expect(layer.stderr).toContain('(ERR_BUNDLE_NOT_AN_IMAGE)')
    expect(existsSync(out)).toBe(false)
    const toDir = await cli(['export', pushed.root, '-o', dir, '--repo', repoA])
    expect(toDir.code).toBe(2)
    expect(toDir.stderr).toContain('is a directory')
  })

  it('an import killed (-9) midway: nothing listed, no block of it in the blockstore; the next import clears its staging', async () => {
    const repo = join(dir, 'killed')
    const r0 = await cli(['import', carPath, '--repo', repo])
    expect(r0.code, r0.stderr).toBe(0)
    const before = await snapshot(repo)
    // an image large enough that its blocks reach the spool (written in 4 MiB steps) before the end
    const img = makeImage({ seed: 'big', layerCount: 2, layerSize: 12_000_000, noise: true })
    const layout = join(dir, 'layout-big')
    await writeLayout(layout, allBlobs(img), [tagged(img.manifest.descriptor, 'v1')])
    const big = join(dir, 'big-repo')
    const push = await cli(['push', `oci:${layout}`, '--repo', big, '--level', '1'])
    expect(push.code, push.stderr).toBe(0)
    const bigCar = (await cliBytes(['export', push.stdout.trim(), '-o', '-', '--repo', big])).stdout
    expect(bigCar.length).toBeGreaterThan(12_000_000)
    const proc = spawn(process.execPath, [cliPath, 'import', '-', '--repo', repo], { stdio: ['pipe', 'ignore', 'ignore'] })
    const exited = new Promise(resolve => proc.on('exit', resolve))
    proc.stdin.on('error', () => {})
    proc.stdin.write(bigCar.subarray(0, bigCar.length - 1_000_000))
    // wait until blocks are staged
    const staging = join(repo, 'import-staging')
    const deadline = Date.now() + 20_000
    const staged = async (): Promise<number> => {
      let n = 0
      for (const d of await readdir(staging).catch(() => [] as string[])) n += (await stat(join(staging, d, 'blocks.spool')).catch(() => ({ size: 0 }))).size
      return n
    }
    while (await staged() < 4_000_000 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
    expect(await staged()).toBeGreaterThanOrEqual(4_000_000)
    proc.kill('SIGKILL')
    await exited
    expect(await snapshot(repo)).toEqual(before)
    expect((await readdir(staging)).length).toBe(1) // left behind
    const r = await cli(['import', '-', '--repo', repo], { input: bigCar })
    expect(r.code, r.stderr).toBe(0)
    expect(await readdir(staging)).toEqual([])
    expect((await cli(['image', 'ls', '--repo', repo])).stdout).toContain(push.stdout.trim())
  }, 120_000)

  describe.skipIf(needs({ root: isRoot, fuse: hasFuse }))('through a daemon that holds the repo', () => {
    it('imports a file and exports to a path relative to the caller; refuses stdin', async () => {
      const root = join(dir, 'daemon')
      const daemon = await startDaemon({ root, logLevel: 'warn', listen: ['/ip4/127.0.0.1/tcp/0'] })
      try {
        const imp = await cli(['import', 'one.car', '--repo', root, '--json'], { cwd: dir })
        expect(imp.code, imp.stderr).toBe(0)
        expect((JSON.parse(imp.stdout) as ImportJson).images.map(i => i.root)).toEqual([pushed.root])
        expect((await cli(['image', 'ls', '--repo', root])).stdout).toContain(pushed.root)
        const exp = await cli(['export', pushed.root, '-o', 'from-daemon.car', '--repo', root], { cwd: dir })
        expect(exp.code, exp.stderr).toBe(0)
        // the same image, the same roots (the descriptor came along), the same order: the same bytes
        expect(Buffer.compare(await readFile(join(dir, 'from-daemon.car')), car)).toBe(0)
        const stdin = await cli(['import', '-', '--repo', root], { input: car })
        expect(stdin.code).toBe(2)
        expect(stdin.stderr).toContain('give the bundle as a file')
        // a repo without the image exports it with --fetch, from the daemon as its peer; without, it refuses
        const id = JSON.parse((await cli(['id', '--repo', root])).stdout) as { addresses: string[] }
        const peer = id.addresses.find(a => a.startsWith('/ip4/127.0.0.1/')) as string
        const empty = join(dir, 'fetching')
        const refused = await cli(['export', pushed.root, '-o', join(dir, 'never.car'), '--repo', empty])
        expect(refused.code).toBe(1)
        expect(refused.stderr).toContain('(ERR_NO_REPO)') // no repo there yet: only --fetch creates one
        expect(existsSync(empty)).toBe(false)
        expect(existsSync(join(dir, 'never.car'))).toBe(false)
        const fetched = await cli(['export', pushed.root, '-o', join(dir, 'fetched.car'), '--repo', empty, '--fetch', '--peer', peer])
        expect(fetched.code, fetched.stderr).toBe(0)
        // no descriptor this time (that repo never listed the image): the same blocks under the root
        const { roots, blocks } = await carOf(await readFile(join(dir, 'fetched.car')))
        expect(roots.map(String)).toEqual([pushed.root])
        expect(new Set(blocks.map(b => b.cid.toString()))).toEqual(new Set((await dagOf(repoA, pushed.root)).keys()))
        expect(daemon.proc.exitCode).toBeNull()
      } finally {
        await daemon.stop()
      }
    }, 120_000)
  })
})
