import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { describe, expect, it } from 'vitest'
import { UnixfsFileReader, verifyBlock } from '../../src/ipfs/dag-reader.js'
import { leafMap, MemStore, random } from './helpers.js'
import type { CID } from 'multiformats/cid'

/** A three-level DAG: 1000-byte leaves, 4 links per node, 60 leaves. */
async function deepFile (): Promise<{ store: MemStore, cid: CID, data: Uint8Array }> {
  const store = new MemStore()
  const data = random(60_000)
  let cid: CID | undefined
  for await (const e of importer([{ content: [data] }], store, { cidVersion: 1, rawLeaves: true, chunker: fixedSize({ chunkSize: 1000 }), layout: balanced({ maxChildrenPerNode: 4 }) })) cid = e.cid
  return { store, cid: cid as CID, data }
}

describe('UnixfsFileReader', () => {
  it('reads any range of a deep DAG, fetching only the blocks on the path', async () => {
    const { store, cid, data } = await deepFile()
    const reader = await UnixfsFileReader.open(cid, store.getBlock)
    expect(reader.size).toBe(data.length)
    const leaves = await leafMap(store.getBlock, cid)
    expect(leaves.length).toBe(60)

    store.gets = 0
    const got = await reader.read(25_500, 1000) // touches leaves 25 and 26
    expect(Buffer.compare(Buffer.from(got), data.subarray(25_500, 26_500))).toBe(0)
    // 60 leaves → 15 → 4 → root (fetched at open). Leaves 25 and 26 sit under one level-1 node
    // (leaves 24–27) under one level-2 node: 2 interior nodes + 2 leaves.
    expect(store.gets).toBe(4)

    store.gets = 0
    await reader.read(25_500, 1000) // interior nodes are cached now: leaves only
    expect(store.gets).toBe(2)

    for (const [o, l] of [[0, 60_000], [999, 2], [59_999, 5], [12_345, 23_456]]) {
      const r = await reader.read(o, l)
      expect(Buffer.compare(Buffer.from(r), data.subarray(o, o + l))).toBe(0)
    }
  })

  it('a read does not wait behind the background fetch of an interior node it needs: it asks at its own priority', async () => {
    const { store, cid, data } = await deepFile()
    const reader = await UnixfsFileReader.open(cid, store.getBlock)
    // the interior prefetch's getter stands for a background queue that does not move
    const stalled: CID[] = []
    void reader.prefetchInterior(undefined, async (c) => { stalled.push(c); return await new Promise<Uint8Array>(() => {}) })
    expect(stalled.length).toBeGreaterThan(0)
    const got = await Promise.race([reader.read(25_500, 1000), new Promise<never>((_resolve, reject) => setTimeout(() => reject(new Error('the read waited on the background fetch')), 5_000))])
    expect(Buffer.compare(Buffer.from(got), data.subarray(25_500, 26_500))).toBe(0)
    // and a background read joins the read's fetch instead of starting its own
    let backgroundGets = 0
    const again = await reader.read(24_000, 10, undefined, async (c) => { backgroundGets++; return await store.getBlock(c) })
    expect(Buffer.compare(Buffer.from(again), data.subarray(24_000, 24_010))).toBe(0)
    expect(backgroundGets).toBe(1) // the leaf only: the interior nodes came from the read's fetch
  })

  it('a read joins an interior node\'s fetch only if it is at least as urgent: a prefetch read does not wait on the background one', async () => {
    const { store, cid, data } = await deepFile()
    const reader = await UnixfsFileReader.open(cid, store.getBlock)
    // ranks: 1 a prefetch read, 2 the interior prefetch (a background queue that does not move)
    void reader.prefetchInterior(undefined, async () => await new Promise<Uint8Array>(() => {}), 2)
    let prefetchGets = 0
    const prefetchGetter = async (c: CID): Promise<Uint8Array> => { prefetchGets++; return await store.getBlock(c) }
    const got = await Promise.race([reader.read(25_500, 1000, undefined, prefetchGetter, 1), new Promise<never>((_resolve, reject) => setTimeout(() => reject(new Error('the prefetch read waited on the background fetch')), 5_000))])
    expect(Buffer.compare(Buffer.from(got), data.subarray(25_500, 26_500))).toBe(0)
    expect(prefetchGets).toBe(4) // its own interior nodes (2) and leaves (2)
    // a background read joins the prefetch read's node fetches; an on-demand one too
    let backgroundGets = 0
    const again = await reader.read(24_000, 10, undefined, async (c) => { backgroundGets++; return await store.getBlock(c) }, 2)
    expect(Buffer.compare(Buffer.from(again), data.subarray(24_000, 24_010))).toBe(0)
    expect(backgroundGets).toBe(1) // the leaf only
    store.gets = 0
    await reader.read(24_000, 10)
    expect(store.gets).toBe(1)
  })

  it('keeps decoded interior nodes up to nodeCacheBytes: past it a read decodes its node again, and still reads right', async () => {
    const { store, cid, data } = await deepFile()
    // room for about three decoded 4-link nodes
    const small = await UnixfsFileReader.open(cid, store.getBlock, { nodeCacheBytes: 3 * (64 + 4 * 512) })
    const roomy = await UnixfsFileReader.open(cid, store.getBlock)
    for (const reader of [small, roomy]) {
      const all = await reader.read(0, data.length) // every interior node once
      expect(Buffer.compare(Buffer.from(all), data)).toBe(0)
    }
    store.gets = 0
    await roomy.read(0, 10) // leaf 0: its interior nodes are still cached
    expect(store.gets).toBe(1)
    store.gets = 0
    const again = await small.read(0, 10) // leaf 0's level-1 and level-2 nodes were evicted
    expect(Buffer.compare(Buffer.from(again), data.subarray(0, 10))).toBe(0)
    expect(store.gets).toBe(3)
  })

  it('rejects a DAG whose parent sizes lie', async () => {
    const { store, cid } = await deepFile()
    const leaves = await leafMap(store.getBlock, cid)
    // serve a wrong leaf for the first CID: size check fails
    const liar = async (c: CID): Promise<Uint8Array> => c.equals(leaves[0].cid) ? new Uint8Array(10) : await store.getBlock(c)
    const reader = await UnixfsFileReader.open(cid, liar)
    await expect(reader.read(0, 100)).rejects.toMatchObject({ code: 'ERR_UNEXPECTED_DAG' })
  })

  it('verifyBlock catches bytes that do not match the CID', async () => {
    const { store, cid } = await deepFile()
    const leaves = await leafMap(store.getBlock, cid)
    const bytes = await store.getBlock(leaves[3].cid)
    expect(() => { verifyBlock(leaves[3].cid, bytes) }).not.toThrow()
    const bad = Uint8Array.from(bytes)
    bad[0] ^= 1
    expect(() => { verifyBlock(leaves[3].cid, bad) }).toThrow(expect.objectContaining({ code: 'ERR_BLOCK_DIGEST_MISMATCH' }))
  })

  it('refuses a CID that is not a UnixFS file', async () => {
    const { store, cid, data } = await deepFile()
    const dirStore = new MemStore()
    for (const [k, v] of store.blocks) dirStore.blocks.set(k, v)
    let dir: CID | undefined
    for await (const e of importer([{ path: 'd/f', content: [random(10)] }], dirStore, { wrapWithDirectory: true })) dir = e.cid
    await expect(UnixfsFileReader.open(dir as CID, dirStore.getBlock)).rejects.toMatchObject({ code: 'ERR_UNEXPECTED_DAG' })
    // the same store serves the file: what was refused is the DAG's kind, not a missing block
    expect((await UnixfsFileReader.open(cid, dirStore.getBlock)).size).toBe(data.length)
  })

  it('an aborted read or open fails with our AbortError, whatever error the block getter threw', async () => {
    const { store, cid } = await deepFile()
    // a getter that rejects the way blockstores and fetch do: with the signal's reason (a DOMException)
    const getter = async (c: CID, signal?: AbortSignal): Promise<Uint8Array> => {
      await new Promise(resolve => setTimeout(resolve, 20))
      signal?.throwIfAborted()
      return await store.getBlock(c)
    }
    const reader = await UnixfsFileReader.open(cid, getter)
    const ac = new AbortController()
    const read = reader.read(0, 60_000, ac.signal)
    ac.abort()
    await expect(read).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' })
    const opening = new AbortController()
    const open = UnixfsFileReader.open(cid, getter, { signal: opening.signal })
    opening.abort()
    await expect(open).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' })
    // the reader still serves reads that were not aborted
    expect((await reader.read(0, 10)).length).toBe(10)
  })
})
