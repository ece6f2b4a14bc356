import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { buildEstargz } from '../../src/estargz/index.js'
import { exportCar, importCar } from '../../src/ipfs/car.js'
import { collectBlock } from '../../src/ipfs/dag-reader.js'
import { publishLayout, resolveBlob } from '../../src/ipfs/directory.js'
import { importSegments } from '../../src/ipfs/import.js'
import { walkDag } from '../../src/ipfs/walk.js'
import { IpfsSource } from '../../src/source/ipfs.js'
import { MemStore, random, streamOf, TempRepos } from './helpers.js'
import { makeTar } from '../../scripts/fixtures/tar.js'
import { CID } from 'multiformats/cid'
import { sha256, sha256Bytes } from '../../scripts/fixtures/digest.js'

const repos = new TempRepos()
afterAll(async () => { await repos.cleanup() })

async function image (store: MemStore): Promise<{ root: CID, layerDigest: string, blob: Buffer }> {
  const parts: Uint8Array[] = []
  const tar = makeTar([{ name: 'f1', data: random(2_500_000) }, { name: 'f2', data: random(1000) }])
  const layer = await importSegments(store, async (sink) => await buildEstargz(streamOf(tar), async (s) => { parts.push(Uint8Array.prototype.slice.call(s.bytes)); await sink(s) }))
  const blob = Buffer.concat(parts)
  const layerDigest = sha256(blob)
  const { cid: root } = await publishLayout(store, store.getBlock, { ociLayout: Buffer.from('{"imageLayoutVersion":"1.0.0"}'), index: Buffer.from('{}'), blobs: [{ digest: layerDigest, cid: layer.cid }] })
  return { root, layerDigest, blob }
}

async function localCount (node: Awaited<ReturnType<TempRepos['node']>>): Promise<number> {
  let n = 0
  for await (const _ of node.localBlockstore.getAll()) n++
  return n
}

describe('CAR export/import', () => {
  it('round-trips an image: every block verified, the layer readable by range on the other node', async () => {
    const store = new MemStore()
    const { root, layerDigest, blob } = await image(store)
    const car = join(await repos.scratch(), 'image.car')
    const exported = await exportCar(store.getBlock, root, car)
    expect(exported.blocks).toBe(store.blocks.size)

    const node = await repos.node()
    const imported = await importCar(node.localBlockstore, car)
    expect(imported.roots.map(String)).toEqual([root.toString()])
    expect(imported.blocks).toBe(exported.blocks)
    // every block of the DAG is in the other node's store, and hashes to its CID
    let walked = 0
    for await (const b of walkDag(root, async (c) => await collectBlock(node.localBlockstore.get(c)))) {
      expect(b.cid.multihash.code).toBe(0x12) // sha2-256
      expect(sha256Bytes(b.bytes ?? new Uint8Array())).toEqual(Buffer.from(b.cid.multihash.digest))
      walked++
    }
    expect(walked).toBe(exported.blocks)

    const layerCid = await resolveBlob(async (c) => await collectBlock(node.localBlockstore.get(c)), root, layerDigest)
    const src = await IpfsSource.open(node.blocks, layerCid, { offline: true })
    expect(Buffer.compare(Buffer.from(await src.read(0, blob.length)), blob)).toBe(0)
  })

  it('refuses garbage, truncated and tampered CARs with InvalidCarError, adding nothing', async () => {
    const store = new MemStore()
    const { root } = await image(store)
    const dir = await repos.scratch()
    const good = join(dir, 'good.car')
    await exportCar(store.getBlock, root, good)
    const bytes = await readFile(good)

    const node = await repos.node()
    // one block is already there before: a failed import must keep it
    const someLeaf = [...store.blocks.keys()].find(k => k.startsWith('bafkrei')) as string
    await node.localBlockstore.put(CID.parse(someLeaf), store.blocks.get(someLeaf) as Uint8Array)

    const cases: Record<string, Uint8Array> = {
      garbage: Buffer.from('definitely not a CAR file'),
      truncated: bytes.subarray(0, Math.floor(bytes.length * 0.6)),
      tampered: (() => { const t = Buffer.from(bytes); t[Math.floor(t.length / 2)] ^= 0xff; return t })()
    }
    for (const [name, content] of Object.entries(cases)) {
      const p = join(dir, `${name}.car`)
      await writeFile(p, content)
      await expect(importCar(node.localBlockstore, p), name).rejects.toMatchObject({ code: 'ERR_INVALID_CAR', name: 'InvalidCarError' })
      expect(await localCount(node), name).toBe(1)
    }
  })
})
