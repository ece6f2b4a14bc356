import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { CID } from 'multiformats/cid'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CarReader } from '@ipld/car/reader'
import { collectBlock, UnixfsFileReader, verifyBlock, walkDag, type BlockFetchPath, type PackBlockstore, type OpenRepo } from '../../src/ipfs/index.js'
import { silentLogger } from '../../src/logging.js'
import { MirrorServer } from '../../src/mirror/index.js'
import type { Descriptor } from '../../src/oci/index.js'
import { corruptPackedBlock } from '../../scripts/fixtures/repo-blocks.js'
import { download, rangesOf, smallLeafImage, type SmallLeafImage } from './helpers.js'

const logger = silentLogger()

/**
 * A layer as push stored one before small members shared leaves (images pushed then are still
 * served): thousands of small leaves (one per gzip member) under interior
 * nodes of 1024 links. The mirror reads a run of them from the pack store at once, each leaf
 * still checked against its CID (here on every read: `verify_every_read`).
 */
describe('mirror: a blob of thousands of small leaves', () => {
  let dir: string
  let repo: OpenRepo
  let mirror: MirrorServer
  let root: string
  let layer: Descriptor
  let src: Buffer
  let layerCid: CID
  /** Each leaf's offset in the blob, and its CID. */
  let leaves: SmallLeafImage['leaves']
  const calls = { get: 0, localGet: 0, readMany: 0, readManyBlocks: 0 }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mirror-small-'))
    // every read hashed: the last case changes a leaf after the mirror has read it
    ;({ repo, root, layer, src, layerCid, leaves } = await smallLeafImage(dir, { verifyEveryRead: true }))
    // Counted: blocks read one by one through the fetch path, and batched reads of the local store.
    const blocks: BlockFetchPath = { get: (cid, o) => { calls.get++; return repo.node.blocks.get(cid, o) } }
    const local = repo.node.localBlockstore as PackBlockstore // the default store
    mirror = new MirrorServer({
      logger,
      blocks,
      localBlockstore: {
        has: async c => await local.has(c),
        get: (c, o) => { calls.localGet++; return local.get(c, o) },
        readMany: async (c, o) => { calls.readMany++; calls.readManyBlocks += c.length; return await local.readMany(c, o) }
      },
      index: repo.index
    }, { address: '127.0.0.1:0', blockTimeoutMs: 1_000 })
    await mirror.start()
  }, 120_000)

  afterAll(async () => {
    await mirror?.stop()
    await repo?.close()
    await new Promise(resolve => setTimeout(resolve, 1500))
    await rm(dir, { recursive: true, force: true })
  })

  const url = (): string => `${mirror.url}/v2/ipfs/${root}/blobs/${layer.digest}`

  it('is the layer the test means: thousands of leaves, most small, under interior nodes', () => {
    expect(leaves.length).toBeGreaterThan(2048)
    expect(leaves.filter(l => l.size < 4096).length / leaves.length).toBeGreaterThan(0.6)
    expect(leaves.reduce((n, l) => n + l.size, 0)).toBe(src.length)
  })

  it('serves it whole, equal to the source, reading the leaves in batches (not one fetch per leaf)', async () => {
    expect((await fetch(url(), { method: 'HEAD' })).status).toBe(200) // opens the image
    const before = { ...calls }
    const r = await download(url())
    expect(r.status).toBe(200)
    expect(r.complete).toBe(true)
    expect(Buffer.compare(r.body, src)).toBe(0)
    // a few blocks one by one (the image's directory, the file's root and interior nodes), not one per leaf
    expect(calls.get - before.get).toBeLessThanOrEqual(16)
    expect(calls.readManyBlocks - before.readManyBlocks).toBe(leaves.length)
    expect(calls.readMany - before.readMany).toBeLessThanOrEqual(Math.ceil(src.length / (1 << 20)) + 4)
  })

  it('answers ranges exactly: random ones, on leaf and interior-node boundaries, one byte of a small leaf, the last byte', async () => {
    const ranges = rangesOf({ src, leaves })
    for (const [a, b] of ranges) {
      const r = await download(url(), { range: `bytes=${a}-${b}` })
      expect(r.status, `${a}-${b}`).toBe(206)
      expect(Buffer.compare(r.body, src.subarray(a, b + 1)), `${a}-${b}`).toBe(0)
    }
  })

  /** A CAR answer's blocks, each checked against its CID; `complete` false when the answer was cut. */
  async function car (query: string): Promise<{ complete: boolean, blocks: Array<{ cid: CID, bytes: Uint8Array }> }> {
    const r = await download(`${mirror.url}/ipfs/${layerCid.toString()}?format=car&${query}`)
    const blocks: Array<{ cid: CID, bytes: Uint8Array }> = []
    try {
      const reader = await CarReader.fromBytes(r.body)
      expect((await reader.getRoots()).map(String)).toEqual([layerCid.toString()])
      for await (const b of reader.blocks()) { verifyBlock(b.cid, b.bytes); blocks.push(b) }
    } catch (err) {
      if (r.complete) throw err
    }
    return { complete: r.complete, blocks }
  }
  const fileOf = async (blocks: Array<{ cid: CID, bytes: Uint8Array }>, a: number, b: number): Promise<Buffer> => {
    const have = new Map(blocks.map(x => [x.cid.toString(), x.bytes]))
    const reader = await UnixfsFileReader.open(layerCid, async c => {
      const bytes = have.get(c.toString())
      if (bytes == null) throw new Error(`block ${c.toString()} not in the CAR`)
      return bytes
    })
    return Buffer.from(await reader.read(a, b - a + 1))
  }

  it('CAR of the layer (dag-scope=entity): every block once, depth first as walkDag, leaves read in batches, reading back as the source; entity-bytes ranges too', async () => {
    const expected: string[] = []
    for await (const b of walkDag(layerCid, async c => await collectBlock(repo.node.localBlockstore.get(c)))) expected.push(b.cid.toString())
    const before = { ...calls }
    const whole = await car('dag-scope=entity')
    expect(whole.complete).toBe(true)
    // the leaves in batches, the few interior nodes one by one
    expect(calls.readManyBlocks - before.readManyBlocks).toBe(leaves.length)
    expect(calls.localGet - before.localGet).toBeLessThanOrEqual(8)
    expect(whole.blocks.map(b => b.cid.toString())).toEqual(expected)
    expect(Buffer.compare(await fileOf(whole.blocks, 0, src.length - 1), src)).toBe(0)
    for (const l of [leaves[3], leaves[1024], leaves[leaves.length - 2]]) {
      const [a, b] = [l.start + 1, Math.min(src.length - 1, l.start + 300_000)]
      const part = await car(`entity-bytes=${a}:${b}`)
      expect(part.complete).toBe(true)
      expect(part.blocks.length).toBeLessThan(expected.length)
      expect(Buffer.compare(await fileOf(part.blocks, a, b), src.subarray(a, b + 1)), `${a}:${b}`).toBe(0)
    }
  })

  it('never serves a leaf whose bytes changed in the pack: the answer stops before it, and other ranges stay exact', async () => {
    const bad = leaves[1500]
    await corruptPackedBlock(join(dir, 'repo'), bad.cid)

    const whole = await download(url())
    expect(whole.complete).toBe(false)
    expect(whole.body.length).toBeLessThanOrEqual(bad.start)
    expect(Buffer.compare(whole.body, src.subarray(0, whole.body.length))).toBe(0)
    const inside = await download(url(), { range: `bytes=${bad.start}-${bad.start + bad.size - 1}` })
    expect(inside.complete).toBe(false)
    expect(inside.body.length).toBe(0)
    // the mirror keeps serving what it has
    const before = await download(url(), { range: `bytes=0-${bad.start - 1}` })
    expect(before.complete).toBe(true)
    expect(Buffer.compare(before.body, src.subarray(0, bad.start))).toBe(0)
    // the gateway's CAR of the layer is cut before that leaf: every block it did send checks out
    const cut = await car('dag-scope=entity')
    expect(cut.complete).toBe(false)
    expect(cut.blocks.some(b => b.cid.equals(bad.cid))).toBe(false)
  })
})
