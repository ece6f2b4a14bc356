import { unixfs } from '@helia/unixfs'
import { importer } from 'ipfs-unixfs-importer'
import { describe, expect, it } from 'vitest'
import type { CID } from 'multiformats/cid'
import { publishLayout, resolveBlob, resolvePath } from '../../src/ipfs/directory.js'
import { importBytes } from '../../src/ipfs/import.js'
import { BlockNotFoundError } from '../../src/ipfs/errors.js'
import { UnixfsFileReader } from '../../src/ipfs/dag-reader.js'
import { MemStore, random } from './helpers.js'
import { sha256 } from '../../scripts/fixtures/digest.js'

/** @helia/unixfs over a MemStore, to read a layout back with another reader than ours. */
function fsOf (store: MemStore): ReturnType<typeof unixfs> {
  return unixfs({ blockstore: { get: async function * (cid: CID) { yield await store.getBlock(cid) }, has: async (cid: CID) => await store.has(cid), put: async (cid: CID, bytes) => await store.put(cid, bytes) } })
}

async function ls (store: MemStore, cid: CID): Promise<Array<{ name: string, cid: CID, size: bigint }>> {
  const out = []
  for await (const e of fsOf(store).ls(cid)) out.push(e)
  return out
}

describe('OCI layout directory', () => {
  it('publishes oci-layout, index.json and blobs/sha256/<hex> linked by CID, and reads them back', async () => {
    const store = new MemStore()
    const layer = random(3 << 20)
    const config = Buffer.from('{"architecture":"amd64"}')
    const layerCid = (await importBytes(store, layer)).cid
    const configCid = (await importBytes(store, config)).cid
    const blocksBefore = store.blocks.size
    const ociLayout = Buffer.from('{"imageLayoutVersion":"1.0.0"}')
    const index = Buffer.from('{"schemaVersion":2,"manifests":[]}')
    const { cid: root } = await publishLayout(store, store.getBlock, {
      ociLayout,
      index,
      blobs: [{ digest: sha256(layer), cid: layerCid }, { digest: sha256(config), cid: configCid }]
    })
    // 3 directories + 2 small files, nothing else (no intermediate directory nodes); the blobs were linked, not copied
    expect(store.blocks.size - blocksBefore).toBe(5)

    expect((await fsOf(store).stat(root)).type).toBe('directory')
    expect((await ls(store, root)).map(e => e.name)).toEqual(['blobs', 'index.json', 'oci-layout'])
    expect((await resolveBlob(store.getBlock, root, sha256(layer))).equals(layerCid)).toBe(true)
    expect((await resolveBlob(store.getBlock, root, sha256(config))).equals(configCid)).toBe(true)
    const sha = await ls(store, await resolvePath(store.getBlock, root, 'blobs/sha256'))
    expect(sha.map(e => e.name).sort()).toEqual([sha256(layer).slice(7), sha256(config).slice(7)].sort())
    // Tsize of the layer link counts the whole file DAG
    expect(Number(sha.find(e => e.cid.equals(layerCid))?.size)).toBeGreaterThan(layer.length)

    const idx = await UnixfsFileReader.open(await resolvePath(store.getBlock, root, 'index.json'), store.getBlock)
    expect(Buffer.from(await idx.read(0, idx.size)).toString()).toBe(index.toString())
    expect((await resolvePath(store.getBlock, root, '')).equals(root)).toBe(true)

    // same input → same root
    const again = await publishLayout(store, store.getBlock, { ociLayout, index, blobs: [{ digest: sha256(config), cid: configCid }, { digest: sha256(layer), cid: layerCid }] })
    expect(again.cid.equals(root)).toBe(true)
  })

  it('refuses HAMT-sharded directories on the way (any number of shard blocks), and lets a missing block through as it is', async () => {
    const store = new MemStore()
    let sharded: CID | undefined
    const files = Array.from({ length: 20 }, (_, i) => ({ path: `f${i}`, content: [random(10)] }))
    for await (const e of importer(files, store, { cidVersion: 1, rawLeaves: true, wrapWithDirectory: true, shardSplitThresholdBytes: 1 })) sharded = e.cid
    expect((await fsOf(store).stat(sharded as CID)).unixfs?.type).toBe('hamt-sharded-directory')
    await expect(resolvePath(store.getBlock, sharded as CID, 'f3')).rejects.toMatchObject({ code: 'ERR_UNEXPECTED_DAG' })

    const blob = random(100)
    const blobCid = (await importBytes(store, blob)).cid
    const { cid: root } = await publishLayout(store, store.getBlock, { ociLayout: Buffer.from('{}'), index: Buffer.from('{}'), blobs: [{ digest: sha256(blob), cid: blobCid }] })
    const blobsDir = await resolvePath(store.getBlock, root, 'blobs')
    const lacking = async (cid: CID): Promise<Uint8Array> => {
      if (cid.equals(blobsDir)) throw new BlockNotFoundError(cid.toString(), 'the local blockstore (offline)')
      return await store.getBlock(cid)
    }
    await expect(resolveBlob(lacking, root, sha256(blob))).rejects.toBeInstanceOf(BlockNotFoundError)
  })

  it('gives typed errors for missing paths, bad digests and conflicting blobs', async () => {
    const store = new MemStore()
    const blob = random(100)
    const blobCid = (await importBytes(store, blob)).cid
    const { cid: root } = await publishLayout(store, store.getBlock, { ociLayout: Buffer.from('{}'), index: Buffer.from('{}'), blobs: [{ digest: sha256(blob), cid: blobCid }] })
    await expect(resolveBlob(store.getBlock, root, sha256(random(5)))).rejects.toMatchObject({ code: 'ERR_PATH_NOT_FOUND' })
    await expect(resolveBlob(store.getBlock, root, `sha512:${'ab'.repeat(64)}`)).rejects.toMatchObject({ code: 'ERR_PATH_NOT_FOUND' })
    await expect(resolvePath(store.getBlock, root, 'nope/index.json')).rejects.toMatchObject({ code: 'ERR_PATH_NOT_FOUND' })
    await expect(resolvePath(store.getBlock, blobCid, 'index.json')).rejects.toMatchObject({ code: 'ERR_UNEXPECTED_DAG' })
    await expect(resolvePath(store.getBlock, root, 'index.json/x')).rejects.toMatchObject({ code: 'ERR_UNEXPECTED_DAG' })
    await expect(resolveBlob(store.getBlock, root, 'not-a-digest')).rejects.toMatchObject({ code: 'ERR_INVALID_OPTION' })
    await expect(publishLayout(store, store.getBlock, { ociLayout: Buffer.from('{}'), index: Buffer.from('{}'), blobs: [{ digest: sha256(blob), cid: blobCid }, { digest: sha256(blob), cid: root }] })).rejects.toMatchObject({ code: 'ERR_INVALID_OPTION' })
  })
})
