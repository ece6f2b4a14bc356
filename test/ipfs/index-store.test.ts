import { decode } from '@ipld/dag-pb'
import type { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { afterAll, describe, expect, it } from 'vitest'
import { collectBlock } from '../../src/ipfs/dag-reader.js'
import { publishLayout } from '../../src/ipfs/directory.js'
import { importBytes } from '../../src/ipfs/import.js'
import { IndexStore } from '../../src/ipfs/index-store.js'
import { GcGuard, collectGarbage, type GcBlockstore } from '../../src/ipfs/gc.js'
import { silentLogger } from '../../src/logging.js'
import { random, TempRepos } from './helpers.js'
import { sha256 } from '../../scripts/fixtures/digest.js'

const repos = new TempRepos()
afterAll(async () => { await repos.cleanup() })


/**
 * The node's collection (src/ipfs/gc.ts), which marks from the pins' roots. Not Helia's own gc: it
 * trusts per-block pin records that its pins.rm does not always clear, so it kept unpinned leaves.
 */
async function gc (node: { localBlockstore: unknown }, store: IndexStore): Promise<void> {
  await collectGarbage({ blockstore: node.localBlockstore as GcBlockstore, pins: store.pins, guard: new GcGuard(), logger: silentLogger() })
}

const pinned = async (store: IndexStore, cid: CID): Promise<boolean> => await store.pins.get(cid) != null

describe('IndexStore', () => {
  it('maps digests to CIDs, persistently', async () => {
    const repo = await repos.dir()
    const node = await repos.node({ repo })
    const store = IndexStore.open(repo, { pins: node.helia.pins, localBlockstore: node.localBlockstore, logger: silentLogger() })
    const blob = random(1000)
    const { cid } = await importBytes(node.helia.blockstore, blob)
    store.digests.put(sha256(blob), cid)
    expect(store.digests.get(sha256(blob))?.equals(cid)).toBe(true)
    expect(store.digests.get(sha256(random(3)))).toBeUndefined()
    expect(() => { store.digests.put('nope', cid) }).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
    store.close()
    const reopened = IndexStore.open(repo, { pins: node.helia.pins, localBlockstore: node.localBlockstore, logger: silentLogger() })
    expect(reopened.digests.get(sha256(blob))?.equals(cid)).toBe(true)
    reopened.close()
  })

  it('lists an image only when all its blocks are stored, pins it, and unlists/unpins it', async () => {
    const repo = await repos.dir()
    const node = await repos.node({ repo })
    const store = IndexStore.open(repo, { pins: node.helia.pins, localBlockstore: node.localBlockstore, logger: silentLogger() })
    try {
      const layer = random(3 << 20)
      const layerCid = (await importBytes(node.helia.blockstore, layer)).cid
      const get = async (c: CID): Promise<Uint8Array> => await collectBlock(node.localBlockstore.get(c))
      const { cid: root } = await publishLayout(node.helia.blockstore, get, { ociLayout: Buffer.from('{}'), index: Buffer.from('{}'), blobs: [{ digest: sha256(layer), cid: layerCid }] })

      // remove one leaf of the layer: the image is incomplete and must not be listed
      const leaf = decode(await get(layerCid)).Links[1].Hash
      const leafBytes = await get(leaf)
      await node.localBlockstore.delete(leaf)
      const record = { root: root.toString(), name: 'test/image:1', created: new Date(0).toISOString() }
      await expect(store.images.add(record)).rejects.toMatchObject({ code: 'ERR_INCOMPLETE_IMAGE' })
      expect(store.images.list()).toEqual([])
      expect(await pinned(store, root)).toBe(false)

      await node.localBlockstore.put(leaf, leafBytes)
      await store.images.add(record, { digests: [{ digest: sha256(layer), cid: layerCid }] })
      expect(store.images.list()).toEqual([record])
      expect(store.images.get(root.toString())).toEqual(record)
      expect(store.digests.get(sha256(layer))?.equals(layerCid)).toBe(true)
      expect(await pinned(store, root)).toBe(true)
      // GC keeps pinned blocks
      await gc(node, store)
      expect(await node.localBlockstore.has(leaf)).toBe(true)
      // adding again is harmless
      await store.images.add(record)
      expect(store.images.list().length).toBe(1)

      expect(await store.images.remove(root.toString())).toBe(true)
      expect(store.images.list()).toEqual([])
      expect(await pinned(store, root)).toBe(false)
      expect(await store.images.remove(root.toString())).toBe(false)
      await gc(node, store)
      expect(await node.localBlockstore.has(leaf)).toBe(false)
    } finally {
      store.close()
    }
  })

  it('pins and unpins without reading the leaves (Helia\'s own walker read them all, ahead of the pin records)', async () => {
    const repo = await repos.dir()
    const node = await repos.node({ repo })
    const store = IndexStore.open(repo, { pins: node.helia.pins, localBlockstore: node.localBlockstore, logger: silentLogger() })
    try {
      const layer = random(3 << 20)
      const layerCid = (await importBytes(node.helia.blockstore, layer)).cid
      const get = async (c: CID): Promise<Uint8Array> => await collectBlock(node.localBlockstore.get(c))
      const { cid: root } = await publishLayout(node.helia.blockstore, get, { ociLayout: Buffer.from('{}'), index: Buffer.from('{}'), blobs: [{ digest: sha256(layer), cid: layerCid }] })
      const leaf = decode(await get(layerCid)).Links[1].Hash
      const bs = node.localBlockstore
      const original = bs.get.bind(bs)
      let leafReads = 0
      bs.get = (cid, options) => {
        if (cid.code === raw.code) leafReads++
        return original(cid, options)
      }
      await store.images.add({ root: root.toString(), name: 'test/image:1', created: new Date(0).toISOString() })
      expect(await pinned(store, root)).toBe(true)
      expect(leafReads).toBe(0)
      expect(await store.images.remove(root.toString())).toBe(true)
      expect(leafReads).toBe(0)
      expect(await pinned(store, root)).toBe(false)
      await gc(node, store)
      expect(await bs.has(leaf)).toBe(false)
    } finally {
      store.close()
    }
  })
})

describe('IndexStore pins', () => {
  it('a pin is one record per root, none per block; an older version\'s Helia pin is listed, kept by GC, and removed with its per-block records', async () => {
    const repo = await repos.dir()
    const node = await repos.node({ repo })
    const store = IndexStore.open(repo, { pins: node.helia.pins, localBlockstore: node.localBlockstore, logger: silentLogger() })
    try {
      const get = async (c: CID): Promise<Uint8Array> => await collectBlock(node.localBlockstore.get(c))
      const image = async (n: number): Promise<{ root: CID, leaf: CID }> => {
        const layer = random((1 << 20) * 2 + n)
        const layerCid = (await importBytes(node.helia.blockstore, layer)).cid
        const { cid: root } = await publishLayout(node.helia.blockstore, get, { ociLayout: Buffer.from('{}'), index: Buffer.from('{}'), blobs: [{ digest: sha256(layer), cid: layerCid }] })
        return { root, leaf: decode(await get(layerCid)).Links[1].Hash }
      }
      const ours = await image(1)
      await store.images.add({ root: ours.root.toString(), name: 'ours', created: new Date(0).toISOString() })
      expect(await store.pins.get(ours.root)).toMatchObject({ depth: Infinity, metadata: {} })
      expect(await node.helia.pins.isPinned(ours.root)).toBe(false) // nothing written per block, the root included
      expect(await node.helia.pins.isPinned(ours.leaf)).toBe(false)

      // a repo an older version pinned in: Helia's recursive pin, a record per block
      const old = await image(2)
      for await (const _ of node.helia.pins.add(old.root, { metadata: { name: 'old' } })) { /* walk */ }
      expect(await node.helia.pins.isPinned(old.leaf)).toBe(true)
      const listed = []
      for await (const p of store.pins.ls()) listed.push(p.cid.toString())
      expect(listed.sort()).toEqual([ours.root.toString(), old.root.toString()].sort())
      await gc(node, store)
      expect(await node.localBlockstore.has(ours.leaf)).toBe(true)
      expect(await node.localBlockstore.has(old.leaf)).toBe(true)
      expect(await store.pins.delete(old.root)).toBe(true)
      expect(await node.helia.pins.isPinned(old.leaf)).toBe(false) // its per-block records went with it
      expect(await store.pins.get(old.root)).toBeUndefined()
      await gc(node, store)
      expect(await node.localBlockstore.has(old.leaf)).toBe(false)
      expect(await node.localBlockstore.has(ours.leaf)).toBe(true)
      expect(await store.pins.delete(old.root)).toBe(false)
    } finally {
      store.close()
    }
  })
})

describe('IndexStore tags', () => {
  it('names listed images only, moves a tag with one update, lists tags with the image, drops them with it, persistently', async () => {
    const repo = await repos.dir()
    const node = await repos.node({ repo })
    const open = (): IndexStore => IndexStore.open(repo, { pins: node.helia.pins, localBlockstore: node.localBlockstore, logger: silentLogger() })
    let store = open()
    const get = async (c: CID): Promise<Uint8Array> => await collectBlock(node.localBlockstore.get(c))
    const image = async (n: number): Promise<string> => {
      const blob = random(100 + n)
      const { cid } = await importBytes(node.helia.blockstore, blob)
      const root = (await publishLayout(node.helia.blockstore, get, { ociLayout: Buffer.from('{}'), index: Buffer.from(`{"n":${n}}`), blobs: [{ digest: sha256(blob), cid }] })).cid.toString()
      await store.images.add({ root, name: `img${n}`, created: new Date(n).toISOString() })
      return root
    }
    const a = await image(1)
    const b = await image(2)
    expect(() => { store.tags.set('team/app', '1', 'bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy') }).toThrow(expect.objectContaining({ code: 'ERR_IMAGE_NOT_LISTED' }))
    store.tags.set('team/app', '1', a)
    store.tags.set('team/app', 'latest', a)
    expect(store.tags.get('team/app', '1')).toBe(a)
    expect(store.tags.hasName('team/app')).toBe(true)
    expect(store.tags.hasName('team')).toBe(false)
    expect(store.images.get(a)?.tags).toEqual(['team/app:1', 'team/app:latest'])
    store.tags.set('team/app', 'latest', b) // moved
    expect(store.tags.rootsOf('team/app').sort()).toEqual([a, b].sort())
    expect(store.images.list().map(i => i.tags)).toEqual([['team/app:1'], ['team/app:latest']])
    store.close()
    store = open()
    expect(store.tags.get('team/app', 'latest')).toBe(b)
    await store.images.remove(b)
    expect(store.tags.get('team/app', 'latest')).toBeUndefined()
    expect(store.tags.delete('team/app', '1')).toBe(true)
    expect(store.tags.hasName('team/app')).toBe(false)
    store.close()
  })
})
