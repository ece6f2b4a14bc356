import { execFileSync } from 'node:child_process'
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gunzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { convertImage } from '../../src/convert/index.js'
import { IpfsPublisher } from '../../src/convert/ipfs-publisher.js'
import { LayoutPublisher } from '../../src/convert/layout-publisher.js'
import { EstargzReader, TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION } from '../../src/estargz/index.js'
import { IpfsImageReader } from '../../src/ipfs/image-reader.js'
import { IndexStore, createNode, type IpfsNode } from '../../src/ipfs/index.js'
import { silentLogger } from '../../src/logging.js'
import { MediaType, TOC_CID_ANNOTATION, TOC_OFFSET_ANNOTATION, openOciLayout, parsePlatform, resolveImages, type Descriptor } from '../../src/oci/index.js'
import { IpfsSource } from '../../src/source/ipfs.js'
import { allBlobs, blob, makeImage, makeMultiPlatform, tagged, writeLayout } from '../../scripts/fixtures/oci-image.js'
import { esgzRef } from '../../scripts/fixtures/tools.js'
import { hasCommand, needs } from '../helpers/env.js'
import { sha256 } from '../../scripts/fixtures/digest.js'

const logger = silentLogger()

interface Repo { node: IpfsNode, index: IndexStore, close: () => Promise<void> }

async function readCid (node: IpfsNode, cid: string): Promise<Buffer> {
  const src = await IpfsSource.open(node.blocks, cid, { offline: true })
  return Buffer.from(await src.read(0, await src.size()))
}

describe.skipIf(needs({ go: hasCommand('go') }))('convertImage', () => {
  let dir: string
  const repos: Repo[] = []
  const openRepoAt = async (path: string): Promise<Repo> => {
    await mkdir(path, { recursive: true })
    const node = await createNode({ repo: path, logger })
    const index = IndexStore.open(path, { pins: node.helia.pins, localBlockstore: node.localBlockstore, logger })
    const repo = { node, index, close: async () => { index.close(); await node.stop() } }
    repos.push(repo)
    return repo
  }
  const multi = makeMultiPlatform({ docker: true })

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'convert-'))
    await writeLayout(join(dir, 'src'), allBlobs(multi), [tagged(multi.index.descriptor, 'latest')])
  })
  afterAll(async () => {
    for (const r of repos) await r.close().catch(() => {})
    await new Promise(resolve => setTimeout(resolve, 1500)) // Helia writes its peer record after stop
    await rm(dir, { recursive: true, force: true })
  })

  async function push (repoDir: string, outDir?: string, opts: { platform?: string, source?: string } = {}): Promise<{ repo: Repo, root: string, result: Awaited<ReturnType<typeof convertImage>> }> {
    const repo = await openRepoAt(repoDir)
    const ipfs = new IpfsPublisher(repo.node, repo.index)
    const publishers = [ipfs, ...(outDir != null ? [await LayoutPublisher.open(outDir)] : [])]
    const source = await openOciLayout(opts.source ?? join(dir, 'src'))
    try {
      const result = await convertImage(source, publishers, { name: 'test', tmpDir: dir, logger, platform: opts.platform != null ? parsePlatform(opts.platform) : undefined, chunkSize: 1024 })
      return { repo, root: ipfs.image?.root.toString() ?? '', result }
    } finally {
      await source.close()
    }
  }

  it('converts a Docker multi-platform image to an OCI eStargz image in IPFS, every descriptor with its CID', async () => {
    const { repo, root, result } = await push(join(dir, 'r1'), join(dir, 'out1'))
    expect(result.root.mediaType).toBe(MediaType.OciIndex)
    expect(result.images).toHaveLength(2)
    const source = await IpfsImageReader.open(repo.node.blocks, root, { offline: true })
    const r = await resolveImages(source)
    expect(r.images.map(i => `${i.platform.os}/${i.platform.architecture}`).sort()).toEqual(['linux/amd64', 'linux/arm64'])
    const all: Descriptor[] = [r.root, ...r.images.flatMap(i => [i.descriptor, i.manifest.config, ...i.layers])]
    for (const d of all) expect(d.urls?.[0], d.digest).toMatch(/^ipfs:\/\/baf/)
    for (const img of r.images) {
      expect(img.manifest.mediaType).toBe(MediaType.OciManifest)
      expect(img.manifest.config.mediaType).toBe(MediaType.OciConfig)
      // history and labels kept
      const orig = multi.images.find(i => i.platform.architecture === img.platform.architecture)
      expect(img.config.history).toEqual(orig?.config.json.history)
      expect(img.config.config?.Labels).toEqual(orig?.config.json.config?.Labels)
      for (const [i, layer] of img.layers.entries()) {
        expect(layer.mediaType).toBe(MediaType.OciLayerGzip)
        const bytes = await readCid(repo.node, layer.urls?.[0].slice(7) ?? '')
        expect(sha256(bytes)).toBe(layer.digest)
        // diff_ids are the real DiffIDs of the new layers
        expect(img.config.rootfs.diff_ids[i]).toBe(sha256(gunzipSync(bytes)))
        expect(Number(layer.annotations?.[UNCOMPRESSED_SIZE_ANNOTATION])).toBe(gunzipSync(bytes).length)
        // the reference accepts each layer with its annotated TOC digest
        const tocDigest = layer.annotations?.[TOC_DIGEST_ANNOTATION] as string
        await writeFile(join(dir, 'layer.esgz'), bytes)
        execFileSync(esgzRef(), ['verify', join(dir, 'layer.esgz'), tocDigest])
        // and our reader reads it lazily from IPFS
        const src = await IpfsSource.open(repo.node.blocks, layer.urls?.[0].slice(7) ?? '', { offline: true })
        const reader = await EstargzReader.open(src.read.bind(src), await src.size(), { tocDigest })
        const orig2 = orig?.layers[i].tar as Uint8Array
        expect(reader.lookup(`dir${i}/file.txt`)?.size).toBeGreaterThan(0)
        expect(orig2.length).toBeGreaterThan(0)
        // the TOC hint names the TOC member's own block, at the offset the footer gives
        expect(Number(layer.annotations?.[TOC_OFFSET_ANNOTATION])).toBe(reader.tocOffset)
        const member = await readCid(repo.node, layer.annotations?.[TOC_CID_ANNOTATION] ?? '')
        expect(member.equals(bytes.subarray(reader.tocOffset, bytes.length - 51))).toBe(true)
      }
    }
    expect(repo.index.images.list().map(i => i.root)).toEqual([root])
  })

  it('the layout exported from the root CID equals --output oci:DIR byte for byte', async () => {
    const { repo, root } = await push(join(dir, 'r2'), join(dir, 'out2'))
    const out = join(dir, 'out2')
    const source = await IpfsImageReader.open(repo.node.blocks, root, { offline: true })
    const { resolvePath, collectBlock } = await import('../../src/ipfs/index.js')
    const { unixfs } = await import('@helia/unixfs')
    const listDirectory = async (cid: import('multiformats/cid').CID): Promise<Array<{ name: string, cid: import('multiformats/cid').CID }>> => {
      const entries = []
      for await (const e of unixfs(repo.node.helia).ls(cid, { offline: true })) entries.push(e)
      return entries
    }
    const getBlock = async (c: import('multiformats/cid').CID): Promise<Uint8Array> => await collectBlock(repo.node.helia.blockstore.get(c, { offline: true }))
    const indexCid = await resolvePath(getBlock, source.rootCid, 'index.json')
    expect((await readCid(repo.node, indexCid.toString())).equals(await readFile(join(out, 'index.json')))).toBe(true)
    const blobsCid = await resolvePath(getBlock, source.rootCid, 'blobs/sha256')
    const names = (await listDirectory(blobsCid)).map(e => e.name).sort()
    expect(names).toEqual((await readdir(join(out, 'blobs', 'sha256'))).sort())
    for (const e of await listDirectory(blobsCid)) {
      expect((await readCid(repo.node, e.cid.toString())).equals(await readFile(join(out, 'blobs', 'sha256', e.name))), e.name).toBe(true)
    }
    expect((await readCid(repo.node, (await resolvePath(getBlock, source.rootCid, 'oci-layout')).toString())).equals(await readFile(join(out, 'oci-layout')))).toBe(true)
  })

  it('gives the same CIDs for the same input, converts one platform on request, and keeps eStargz layers', async () => {
    const a = await push(join(dir, 'r3'))
    const b = await push(join(dir, 'r4'))
    expect(a.root).toBe(b.root)
    const one = await push(join(dir, 'r5'), join(dir, 'out5'), { platform: 'linux/arm64' })
    expect(one.result.images).toHaveLength(1)
    expect(one.result.images[0].platform?.architecture).toBe('arm64')
    // converting the converted image again keeps its layers as they are
    const again = await push(join(dir, 'r6'), undefined, { source: join(dir, 'out5') })
    const before = one.result.images[0].layers.map(l => l.descriptor.digest)
    expect(again.result.images[0].layers.map(l => l.descriptor.digest)).toEqual(before)
    expect(again.result.images[0].layers.every(l => l.reused)).toBe(true)
  })

  it('bad input: a layer that is not a tar, or a blob whose digest does not match, fails naming the blob and lists nothing', async () => {
    const img = makeImage({ seed: 'bad' })
    const notTar = blob(MediaType.OciLayerGzip, Buffer.from('not a tar at all, not gzip either'.repeat(30)))
    const manifest = { ...img.manifest.json, layers: [img.layers[0].descriptor, notTar.descriptor] }
    const config = { ...img.config.json, rootfs: { type: 'layers', diff_ids: [img.layers[0].diffId, 'sha256:' + '1'.repeat(64)] } }
    const { jsonBlob } = await import('../../scripts/fixtures/oci-image.js')
    const c = jsonBlob(MediaType.OciConfig, config)
    const m = jsonBlob(MediaType.OciManifest, { ...manifest, config: c.descriptor })
    await writeLayout(join(dir, 'bad'), [img.layers[0], notTar, c, m], [tagged(m.descriptor, 'latest')])
    const repo = await openRepoAt(join(dir, 'r7'))
    const out = join(dir, 'out7')
    const pubs = [new IpfsPublisher(repo.node, repo.index), await LayoutPublisher.open(out)]
    const source = await openOciLayout(join(dir, 'bad'))
    const err = await convertImage(source, pubs, { name: 'bad', tmpDir: dir, logger }).then(() => undefined, (e: Error) => e)
    await source.close()
    expect(err?.message).toContain(notTar.descriptor.digest)
    expect((err as { code?: string }).code).toMatch(/^ERR_/)
    for (const p of pubs) await p.abort()
    expect(repo.index.images.list()).toEqual([])
    // a blob whose bytes do not match its digest
    await writeFile(join(dir, 'bad', 'blobs', 'sha256', img.layers[0].descriptor.digest.slice(7)), Buffer.from('tampered'))
    const s2 = await openOciLayout(join(dir, 'bad'))
    const err2 = await convertImage(s2, [new IpfsPublisher(repo.node, repo.index)], { name: 'bad', tmpDir: dir, logger }).then(() => undefined, (e: Error) => e)
    await s2.close()
    expect(err2?.message).toContain(img.layers[0].descriptor.digest)
    expect(repo.index.images.list()).toEqual([])
  })
})
