/**
 * IpfsImageReader: an image published in IPFS (our OCI layout directory, or a reference
 * descriptor JSON) read through a real Helia node's block path, offline.
 */
import { CID } from 'multiformats/cid'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { IpfsImageReader, cidOfDescriptor, parseIpfsRef } from '../../src/ipfs/image-reader.js'
import { BlockNotFoundError, PathNotFoundError } from '../../src/ipfs/errors.js'
import { importBytes, publishLayout, type IpfsNode } from '../../src/ipfs/index.js'
import { collectBlock } from '../../src/ipfs/dag-reader.js'
import { DigestMismatchError, MalformedManifestError, SizeMismatchError } from '../../src/oci/errors.js'
import { MediaType } from '../../src/oci/media-types.js'
import { REF_NAME_ANNOTATION, type Descriptor, type Manifest } from '../../src/oci/types.js'
import { sha256 } from '../../scripts/fixtures/digest.js'
import { allBlobs, blob, jsonBlob, makeImage, tagged, type Blob, type TestImage } from '../../scripts/fixtures/oci-image.js'
import { leafMap, MemStore, TempRepos } from './helpers.js'
import { flipped, imageReaderSuite } from '../oci/image-reader-suite.js'

const OCI_LAYOUT = Buffer.from('{"imageLayoutVersion":"1.0.0"}')

const indexJson = (entries: Descriptor[]): Uint8Array => Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: entries }))

/**
 * Publishes blobs as an OCI layout directory in the node's blockstore; `stored` overrides the
 * bytes stored for a digest (a lying layout). Returns the directory's CID and each blob's CID.
 */
async function publish (node: IpfsNode, blobs: Blob[], entries: Descriptor[], stored: Map<string, Uint8Array> = new Map()): Promise<{ root: CID, cids: Map<string, CID> }> {
  const bs = node.helia.blockstore
  const cids = new Map<string, CID>()
  for (const b of blobs) cids.set(b.descriptor.digest, (await importBytes(bs, stored.get(b.descriptor.digest) ?? b.bytes)).cid)
  const getBlock = async (cid: CID): Promise<Uint8Array> => await collectBlock(node.localBlockstore.get(cid))
  const { cid: root } = await publishLayout(bs, getBlock, { ociLayout: OCI_LAYOUT, index: indexJson(entries), blobs: [...cids].map(([digest, cid]) => ({ digest, cid })) })
  return { root, cids }
}

const repos = new TempRepos()
afterAll(async () => { await repos.cleanup() })

imageReaderSuite('IPFS (IpfsImageReader)', async (image: TestImage) => {
  const node = await repos.node()
  const blobs = allBlobs(image)
  const entries = [tagged(image.manifest.descriptor, 'latest')]
  const victim = image.layers[1]
  const good = await publish(node, blobs, entries)
  const bad = await publish(node, blobs, entries, new Map([[victim.descriptor.digest, flipped(victim.bytes)]]))
  const { mediaType, digest, size } = image.manifest.descriptor
  return {
    open: async () => await IpfsImageReader.open(node.blocks, good.root, { offline: true }),
    openTampered: async () => ({ reader: await IpfsImageReader.open(node.blocks, bad.root, { offline: true }), desc: victim.descriptor }),
    notFoundCode: PathNotFoundError.code,
    root: { mediaType, digest, size },
    cleanup: async () => await node.stop()
  }
})

describe('IpfsImageReader', () => {
  let node: IpfsNode
  const a = makeImage({ seed: 'ipfs a', layerSize: 1_500_000, noise: true })
  const b = makeImage({ seed: 'ipfs b', layerCount: 1 })
  let layout: { root: CID, cids: Map<string, CID> }

  beforeAll(async () => {
    node = await repos.node()
    layout = await publish(node, [...allBlobs(a), ...allBlobs(b)], [tagged(a.manifest.descriptor, 'a'), tagged(b.manifest.descriptor, 'b')])
  })

  const open = async (ref: string | CID, options: { tag?: string } = {}): Promise<IpfsImageReader> => await IpfsImageReader.open(node.blocks, ref, { offline: true, ...options })

  it('opens a layout directory by ipfs://CID, /ipfs/CID or the bare CID; refuses anything else with ERR_BAD_IPFS_REF', async () => {
    const cid = layout.root.toString()
    for (const ref of [`ipfs://${cid}`, `/ipfs/${cid}`, cid, `ipfs://${cid}/`]) {
      const s = await open(ref)
      expect(s.name).toBe(`ipfs://${cid}`)
      expect(s.rootCid.equals(layout.root)).toBe(true)
      expect(s.directory?.equals(layout.root)).toBe(true)
    }
    for (const ref of ['ipfs://not-a-cid', 'docker://x/y', '']) {
      expect(() => parseIpfsRef(ref), ref).toThrow(expect.objectContaining({ code: 'ERR_BAD_IPFS_REF' }))
      await expect(open(ref), ref).rejects.toMatchObject({ code: 'ERR_BAD_IPFS_REF' })
    }
  })

  it('selects the image by tag; without a tag, the first of index.json; an unknown tag is a MalformedManifestError', async () => {
    expect(await (await open(layout.root, { tag: 'b' })).root()).toEqual(tagged(b.manifest.descriptor, 'b'))
    expect(await (await open(layout.root, { tag: 'a' })).root()).toEqual(tagged(a.manifest.descriptor, 'a'))
    expect((await (await open(layout.root)).root()).annotations?.[REF_NAME_ANNOTATION]).toBe('a')
    const err = await open(layout.root, { tag: 'c' }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(MalformedManifestError)
    expect((err as Error).message).toMatch(/no image tagged c/)
  })

  it('finds a blob\'s CID in the layout by its digest, or in its ipfs:// URL first', async () => {
    const s = await open(layout.root, { tag: 'a' })
    for (const blob of allBlobs(a)) expect((await s.cidOf(blob.descriptor)).equals(layout.cids.get(blob.descriptor.digest) as CID), blob.descriptor.digest).toBe(true)
    // a URL wins over the layout: here it names b's config, which the layout holds under another digest
    const other = layout.cids.get(b.config.descriptor.digest) as CID
    const withUrl = { ...a.config.descriptor, urls: ['https://example.com/x', `ipfs://${other.toString()}`] }
    expect(cidOfDescriptor(withUrl)?.equals(other)).toBe(true)
    expect((await s.cidOf(withUrl)).equals(other)).toBe(true)
    // and the bytes fetched through it are checked against the descriptor
    await expect(s.fetchBytes(withUrl)).rejects.toBeInstanceOf(SizeMismatchError)
    await expect(s.fetchBytes({ ...withUrl, size: b.config.descriptor.size })).rejects.toBeInstanceOf(DigestMismatchError)
    expect(cidOfDescriptor({ ...a.config.descriptor, urls: ['ipfs://garbage', 'http://x'] })).toBeUndefined()
  })

  it('opens a reference descriptor JSON and reads every blob through the descriptors\' ipfs:// URLs', async () => {
    const bs = node.helia.blockstore
    const withUrl = async (x: Blob): Promise<Descriptor> => ({ ...x.descriptor, urls: [`ipfs://${(await importBytes(bs, x.bytes)).cid.toString()}`] })
    const manifestJson: Manifest = { ...a.manifest.json, config: await withUrl(a.config), layers: await Promise.all(a.layers.map(withUrl)) }
    const manifest = jsonBlob(MediaType.OciManifest, manifestJson)
    const rootDesc = await withUrl(manifest)
    const handle = (await importBytes(bs, Buffer.from(JSON.stringify(rootDesc)))).cid
    const s = await open(handle)
    expect(s.directory).toBeUndefined()
    expect(await s.root()).toEqual(rootDesc)
    expect(Buffer.from(await s.fetchBytes(rootDesc)).equals(manifest.bytes)).toBe(true)
    for (const [i, d] of manifestJson.layers.entries()) expect(Buffer.from(await s.fetchBytes(d)).equals(a.layers[i].bytes)).toBe(true)
    // without a URL there is nowhere to look
    const err = await s.fetchBytes(a.config.descriptor).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(MalformedManifestError)
    expect((err as Error).message).toMatch(/has no ipfs:\/\/ URL/)
  })

  it('a root that is neither a layout directory nor a descriptor is a MalformedManifestError', async () => {
    const bs = node.helia.blockstore
    for (const bytes of [Buffer.from('{"hello": "world"}'), Buffer.from('not json'), Buffer.from(JSON.stringify({ digest: sha256('x'), size: '3', mediaType: MediaType.OciManifest }))]) {
      const cid = (await importBytes(bs, bytes)).cid
      await expect(open(cid), bytes.toString()).rejects.toBeInstanceOf(MalformedManifestError)
    }
  })

  it('offline, a missing block is a BlockNotFoundError: at open for the root, mid-stream for a layer', async () => {
    // a root nobody has
    const nowhere = (await importBytes(new MemStore(), Buffer.from('stored nowhere'))).cid
    const t0 = Date.now()
    await expect(open(nowhere)).rejects.toBeInstanceOf(BlockNotFoundError)
    expect(Date.now() - t0).toBeLessThan(5_000)

    // a layout whose layer lacks its last leaf block
    const image = makeImage({ seed: 'ipfs missing', layerCount: 1, layerSize: 2_500_000, noise: true })
    const layer = image.layers[0]
    const mem = new MemStore()
    const layerCid = (await importBytes(mem, layer.bytes)).cid
    const leaves = await leafMap(mem.getBlock, layerCid)
    expect(leaves.length).toBeGreaterThan(1)
    const lost = leaves[leaves.length - 1].cid
    for (const [key, bytes] of mem.blocks) if (key !== lost.toString()) await node.localBlockstore.put(CID.parse(key), bytes)
    const bs = node.helia.blockstore
    const cids = [{ digest: layer.descriptor.digest, cid: layerCid }]
    for (const x of [image.config, image.manifest]) cids.push({ digest: x.descriptor.digest, cid: (await importBytes(bs, x.bytes)).cid })
    const getBlock = async (cid: CID): Promise<Uint8Array> => await collectBlock(node.localBlockstore.get(cid))
    const { cid: root } = await publishLayout(bs, getBlock, { ociLayout: OCI_LAYOUT, index: indexJson([tagged(image.manifest.descriptor, 'latest')]), blobs: cids })
    const s = await open(root)
    const parts: Uint8Array[] = []
    const err = await (async () => {
      for await (const p of await s.fetch(layer.descriptor)) parts.push(p)
    })().then(() => undefined, (e: unknown) => e)
    expect(err).toBeInstanceOf(BlockNotFoundError)
    expect((err as Error).message).toContain(lost.toString())
    // what came before the missing block was the layer's own bytes
    expect(Buffer.concat(parts).equals(Buffer.from(layer.bytes).subarray(0, leaves[leaves.length - 1].offset))).toBe(true)
  })

  it('a blob whose stored bytes do not match its digest fails with DigestMismatchError naming it', async () => {
    const image = makeImage({ seed: 'ipfs lie', layerCount: 1 })
    const lie = blob(MediaType.OciLayerGzip, Buffer.from('other bytes entirely'))
    const { root } = await publish(node, allBlobs(image), [tagged(image.manifest.descriptor, 'latest')], new Map([[image.layers[0].descriptor.digest, lie.bytes]]))
    const s = await open(root)
    // the size does not match either: the size is what is checked first
    await expect(s.fetchBytes(image.layers[0].descriptor)).rejects.toBeInstanceOf(SizeMismatchError)
    await expect(s.fetchBytes({ ...image.layers[0].descriptor, size: lie.bytes.length })).rejects.toBeInstanceOf(DigestMismatchError)
    const err = await s.fetchBytes({ ...image.layers[0].descriptor, size: lie.bytes.length }).then(() => new Error('no error'), (e: Error) => e)
    expect(err.message).toContain(image.layers[0].descriptor.digest)
    expect(err.message).toContain(`ipfs://${root.toString()}`)
  })
})
