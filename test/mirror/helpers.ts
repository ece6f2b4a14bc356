import { createHash, randomBytes, randomInt } from 'node:crypto'
import { get as httpGet } from 'node:http'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { CID } from 'multiformats/cid'
import { convertImage, IpfsPublisher, LayoutPublisher } from '../../src/convert/index.js'
import { collectBlock, decodeFileNode, importBytes, importSegments, openRepo, publishLayout, type NodeOptions, type OpenRepo } from '../../src/ipfs/index.js'
import { silentLogger, type Logger } from '../../src/logging.js'
import { MirrorServer, type MirrorOptions } from '../../src/mirror/index.js'
import { MediaType, openOciLayout, type Descriptor, type Index } from '../../src/oci/index.js'
import { allBlobs, jsonBlob, makeImage, tagged, writeLayout } from '../../scripts/fixtures/oci-image.js'

const logger = silentLogger()

/** A repo holding a converted 2-platform image (layers of a few MiB, so blobs span many leaves). */
export interface MirrorFixture {
  dir: string
  repo: OpenRepo
  /** The image's root CID. */
  root: string
  /** The converted image as an OCI layout (the source bytes to compare with). */
  layout: string
  cleanup: () => Promise<void>
}

export async function mirrorFixture (opts: { listen?: string[] } = {}): Promise<MirrorFixture> {
  const dir = await mkdtemp(join(tmpdir(), 'mirror-'))
  // incompressible layers of a few MiB: a blob of several 1 MiB leaves under interior nodes
  const images = [
    makeImage({ platform: { os: 'linux', architecture: 'amd64' }, noise: true, layerSize: 6 << 20 }),
    makeImage({ platform: { os: 'linux', architecture: 'arm64', variant: 'v8' }, layerCount: 3 })
  ]
  const index: Index = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: images.map(i => i.manifest.descriptor) }
  const indexBlob = jsonBlob(MediaType.OciIndex, index)
  await writeLayout(join(dir, 'src'), [...images.flatMap(i => allBlobs(i)), indexBlob], [tagged(indexBlob.descriptor, 'latest')])
  await mkdir(join(dir, 'repo'), { recursive: true })
  const repo = await openRepo({ logger }, { repo: join(dir, 'repo'), listen: opts.listen, inboundConnectionsPerSec: 1000 })
  const ipfs = new IpfsPublisher(repo.node, repo.index)
  const layout = join(dir, 'layout')
  const source = await openOciLayout(join(dir, 'src'))
  try {
    await convertImage(source, [ipfs, await LayoutPublisher.open(layout)], { name: 'mirror-test', tmpDir: dir, logger, chunkSize: 64 << 10 })
  } finally {
    await source.close()
  }
  return {
    dir,
    repo,
    root: ipfs.image?.root.toString() ?? '',
    layout,
    cleanup: async () => {
      await repo.close().catch(() => {})
      await new Promise(resolve => setTimeout(resolve, 1500)) // Helia writes its peer record after stop
      await rm(dir, { recursive: true, force: true })
    }
  }
}

/** A mirror serving the fixture's repo on a loopback port of its own; the caller stops it. */
export async function startMirror (fx: Pick<MirrorFixture, 'repo'>, options: Partial<MirrorOptions> = {}, logger: Logger = silentLogger()): Promise<{ mirror: MirrorServer, port: number }> {
  const { repo } = fx
  const mirror = new MirrorServer({ logger, blocks: repo.node.blocks, localBlockstore: repo.node.localBlockstore, index: repo.index }, { address: '127.0.0.1:0', ...options })
  await mirror.start()
  return { mirror, port: Number(new URL(mirror.url).port) }
}

const digestOf = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`

/** An image of one layer stored as push stored one before small members shared leaves: thousands of small leaves under interior nodes. */
export interface SmallLeafImage {
  repo: OpenRepo
  root: string
  layer: Descriptor
  layerCid: CID
  /** The layer's bytes. */
  src: Buffer
  /** Each leaf's offset in the layer, its size and CID, in file order. */
  leaves: Array<{ start: number, size: number, cid: CID }>
}

/**
 * A repo in `dir/repo` holding one image whose layer is 2500 segments (most of 1–6000 bytes,
 * every 97th of 200 kB), one leaf each, under interior nodes of 1024 links.
 */
export async function smallLeafImage (dir: string, options: Partial<Omit<NodeOptions, 'logger' | 'repo'>> = {}): Promise<SmallLeafImage> {
  await mkdir(join(dir, 'repo'), { recursive: true })
  const repo = await openRepo({ logger }, { ...options, repo: join(dir, 'repo') })
  const bs = repo.node.localBlockstore
  const segments = Array.from({ length: 2500 }, (_, i) => randomBytes(i % 97 === 0 ? 200_000 : 1 + randomInt(6000)))
  const src = Buffer.concat(segments)
  const { cid: layerCid } = await importSegments(bs, async sink => {
    let offset = 0
    for (const bytes of segments) { await sink({ kind: 'data', offset, bytes }); offset += bytes.length }
  }, { smallMemberLeafBytes: 0 }) // one leaf per member, as pushes before small members shared leaves
  const layer: Descriptor = { mediaType: MediaType.OciLayerGzip, digest: digestOf(src), size: src.length }
  const root = await oneLayerImage(bs, layer, layerCid)
  const get = async (c: CID): Promise<Uint8Array> => await collectBlock(bs.get(c))
  await repo.node.flush()
  // the leaf layout, to aim ranges at leaf and interior-node boundaries
  const leaves: SmallLeafImage['leaves'] = []
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
  return { repo, root, layer, layerCid, src, leaves }
}

/**
 * Publishes an image of one layer whose blob is the file `layerCid` (the descriptor says its
 * digest and size: a test may name other bytes than the file holds), with a config, a manifest
 * and an index of its own, as a layout directory; its root CID.
 */
export async function oneLayerImage (bs: OpenRepo['node']['localBlockstore'], layer: Descriptor, layerCid: CID): Promise<string> {
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
  return (await publishLayout(bs, get, { ociLayout: Buffer.from('{"imageLayoutVersion":"1.0.0"}'), index, blobs })).cid.toString()
}

/** A GET whose body is kept however it ends: complete, or cut by the server (even before the headers reach us). */
export async function download (url: string, headers: Record<string, string> = {}): Promise<{ status: number, body: Buffer, complete: boolean }> {
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

/** Ranges of a layer aimed at its edges: first and last byte, leaf and interior-node boundaries, and random ones. */
export function rangesOf (img: Pick<SmallLeafImage, 'src' | 'leaves'>): Array<[number, number]> {
  const { src, leaves } = img
  const ranges: Array<[number, number]> = [[0, 0], [src.length - 1, src.length - 1]]
  for (const i of [1, 1023, 1024, 1025, 2047, 2048, leaves.length - 1]) {
    const l = leaves[Math.min(i, leaves.length - 1)]
    ranges.push([l.start, l.start], [Math.max(0, l.start - 1), l.start + l.size - 1], [l.start + Math.floor(l.size / 2), Math.min(src.length - 1, l.start + l.size + 10)])
  }
  for (let i = 0; i < 20; i++) {
    const a = randomInt(src.length)
    ranges.push([a, Math.min(src.length - 1, a + randomInt(3 << 20))])
  }
  return ranges
}
