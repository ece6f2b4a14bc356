import { createHash, randomBytes, randomInt } from 'node:crypto'
import { get as httpGet } from 'node:http'
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { CID } from 'multiformats/cid'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CarReader } from '@ipld/car/reader'
import { collectBlock, decodeFileNode, importBytes, importSegments, openRepo, publishLayout, UnixfsFileReader, verifyBlock, walkDag, type BlockFetchPath, type PackBlockstore, type OpenRepo } from '../../src/ipfs/index.js'
import { silentLogger } from '../../src/logging.js'
import { MirrorServer } from '../../src/mirror/index.js'
import { MediaType, type Descriptor } from '../../src/oci/index.js'
import { packEntries } from '../../scripts/fixtures/repo-blocks.js'

const logger = silentLogger()
const digestOf = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`

/** A GET whose body is kept however it ends: complete, or cut by the server (even before the headers reach us). */
async function download (url: string, headers: Record<string, string> = {}): Promise<{ status: number, body: Buffer, complete: boolean }> {
  return await new Promise((resolve) => {
    httpGet(url, { headers }, res => {
      const parts: Buffer[] = []
      let complete = false
      res.on('data', (d: Buffer) => parts.push(d))
      res.on('end', () => { complete = true })
      res.on('close', () => { resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts), complete: complete && res.complete }) })
      res.on('error', () => {})
    }).on('error', () => { resolve({ status: 0, body: Buffer.alloc(0), complete: false }) })
  })
}

/**
 * A layer as push stores one: thousands of small leaves (one per gzip member) under interior
 * nodes of 1024 links. The mirror reads a run of them from the pack store at once, each leaf
 * still checked against its CID.
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
  const leaves: Array<{ start: number, size: number, cid: CID }> = []
  const calls = { get: 0, localGet: 0, readMany: 0, readManyBlocks: 0 }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mirror-small-'))
    await mkdir(join(dir, 'repo'))
    repo = await openRepo({ logger }, { repo: join(dir, 'repo') })
    const bs = repo.node.localBlockstore
    const segments = Array.from({ length: 2500 }, (_, i) => randomBytes(i % 97 === 0 ? 200_000 : 1 + randomInt(6000)))
    src = Buffer.concat(segments)
    ;({ cid: layerCid } = await importSegments(bs, async sink => {
      let offset = 0
      for (const bytes of segments) { await sink({ kind: 'data', offset, bytes }); offset += bytes.length }
    }))
    layer = { mediaType: MediaType.OciLayerGzip, digest: digestOf(src), size: src.length }
    const configBytes = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:' + '0'.repeat(64) + '"]}}')
    const config: Descriptor = { mediaType: MediaType.OciConfig, digest: digestOf(configBytes), size: configBytes.length }
    const manifestBytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config, layers: [layer] }))
    const manifest: Descriptor = { mediaType: MediaType.OciManifest, digest: digestOf(manifestBytes), size: manifestBytes.length }
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [manifest] }))
    const blobs = [
      { digest: layer.digest, cid: layerCid },
      { digest: config.digest, cid: (await importBytes(bs, configBytes)).cid },
      { digest: manifest.digest, cid: (await importBytes(bs, manifestBytes)).cid }
    ]
    const get = async (c: CID): Promise<Uint8Array> => await collectBlock(bs.get(c))
    root = (await publishLayout(bs, get, { ociLayout: Buffer.from('{"imageLayoutVersion":"1.0.0"}'), index, blobs })).cid.toString()
    await repo.node.flush()
    // the leaf layout, to aim ranges at leaf and interior-node boundaries
    const walk = async (cid: CID, base: number): Promise<void> => {
      const node = decodeFileNode(cid, await get(cid))
      let pos = base + node.data.length
      for (const [i, c] of node.children.entries()) {
        if (c.code === 0x55) leaves.push({ start: pos, size: node.sizes[i], cid: c })
        else await walk(c, pos)
        pos += node.sizes[i]
      }
    }
    await walk(layerCid, 0)
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
    const ranges: Array<[number, number]> = [[0, 0], [src.length - 1, src.length - 1]]
    for (const i of [1, 1023, 1024, 1025, 2047, 2048, leaves.length - 1]) {
      const l = leaves[Math.min(i, leaves.length - 1)]
      ranges.push([l.start, l.start], [Math.max(0, l.start - 1), l.start + l.size - 1], [l.start + Math.floor(l.size / 2), Math.min(src.length - 1, l.start + l.size + 10)])
    }
    for (let i = 0; i < 20; i++) {
      const a = randomInt(src.length)
      ranges.push([a, Math.min(src.length - 1, a + randomInt(3 << 20))])
    }
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
    const e = packEntries(join(dir, 'repo')).get(Buffer.from(bad.cid.multihash.bytes).toString('hex')) as { pack: number, offset: number, length: number }
    const fh = await open(join(dir, 'repo', 'blockstore', 'packs', `${String(e.pack).padStart(8, '0')}.pack`), 'r+')
    const b = Buffer.alloc(1)
    await fh.read(b, 0, 1, e.offset)
    b[0] ^= 0xff
    await fh.write(b, 0, 1, e.offset)
    await fh.close()

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
