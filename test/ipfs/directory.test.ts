import { describe, expect, it } from 'vitest'
import { listDirectory, publishLayout, resolveBlob, resolvePath } from '../../src/ipfs/directory.js'
import { importBytes } from '../../src/ipfs/import.js'
import { UnixfsFileReader } from '../../src/ipfs/dag-reader.js'
import { MemStore, random } from './helpers.js'
import { sha256 } from '../../scripts/fixtures/digest.js'


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
      blobs: [{ digest: sha256(layer), cid: layerCid }, { digest: sha256(config), cid: configCid }],
      extra: { 'descriptor.json': Buffer.from('{}') }
    })
    // 3 directories + 3 small files; the blobs were linked, not copied
    expect(store.blocks.size - blocksBefore).toBe(6)

    const top = await listDirectory(store.getBlock, root)
    expect(top.map(e => e.name)).toEqual(['blobs', 'descriptor.json', 'index.json', 'oci-layout'])
    expect((await resolveBlob(store.getBlock, root, sha256(layer))).equals(layerCid)).toBe(true)
    expect((await resolveBlob(store.getBlock, root, sha256(config))).equals(configCid)).toBe(true)
    const sha = await listDirectory(store.getBlock, await resolvePath(store.getBlock, root, 'blobs/sha256'))
    expect(sha.map(e => e.name).sort()).toEqual([sha256(layer).slice(7), sha256(config).slice(7)].sort())
    // Tsize of the layer link counts the whole file DAG
    expect(sha.find(e => e.cid.equals(layerCid))?.tsize).toBeGreaterThan(layer.length)

    const idx = await UnixfsFileReader.open(await resolvePath(store.getBlock, root, 'index.json'), store.getBlock)
    expect(Buffer.from(await idx.read(0, idx.size)).toString()).toBe(index.toString())

    // same input → same root
    const again = await publishLayout(store, store.getBlock, { ociLayout, index, blobs: [{ digest: sha256(config), cid: configCid }, { digest: sha256(layer), cid: layerCid }], extra: { 'descriptor.json': Buffer.from('{}') } })
    expect(again.cid.equals(root)).toBe(true)
  })

  it('gives typed errors for missing paths, bad digests and non-directories', async () => {
    const store = new MemStore()
    const blob = random(100)
    const blobCid = (await importBytes(store, blob)).cid
    const { cid: root } = await publishLayout(store, store.getBlock, { ociLayout: Buffer.from('{}'), index: Buffer.from('{}'), blobs: [{ digest: sha256(blob), cid: blobCid }] })
    await expect(resolveBlob(store.getBlock, root, sha256(random(5)))).rejects.toMatchObject({ code: 'ERR_PATH_NOT_FOUND' })
    await expect(resolveBlob(store.getBlock, root, 'not-a-digest')).rejects.toMatchObject({ code: 'ERR_INVALID_OPTION' })
    await expect(listDirectory(store.getBlock, blobCid)).rejects.toMatchObject({ code: 'ERR_UNEXPECTED_DAG' })
    await expect(publishLayout(store, store.getBlock, { ociLayout: Buffer.from('{}'), index: Buffer.from('{}'), blobs: [{ digest: sha256(blob), cid: blobCid }, { digest: sha256(blob), cid: root }] })).rejects.toMatchObject({ code: 'ERR_INVALID_OPTION' })
  })
})
