import { mkdir, readdir, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { identity as identityHash } from 'multiformats/hashes/identity'
import { sha256 } from 'multiformats/hashes/sha2'
import { afterAll, describe, expect, it } from 'vitest'
import { collectBlock } from '../../src/ipfs/dag-reader.js'
import { createLocalBlockstore } from '../../src/ipfs/local-blockstore.js'
import { LmdbBlockstore } from '../../src/ipfs/lmdb-blockstore.js'
import { PackBlockstore } from '../../src/ipfs/pack-blockstore.js'
import { RepoBlockstore } from '../../src/ipfs/stores.js'
import { corruptBlocks, corruptPackedBlock } from '../../scripts/fixtures/repo-blocks.js'
import type { WriteBehindQueue } from '../../src/ipfs/write-behind.js'
import { TempRepos, random } from './helpers.js'

const repos = new TempRepos()
afterAll(async () => { await repos.cleanup() })

const cidOf = async (b: Uint8Array): Promise<CID> => CID.createV1(raw.code, await sha256.digest(b))
const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0

const mh = (cid: CID): string => Buffer.from(cid.multihash.bytes).toString('hex')

async function all (store: { getAll: () => AsyncIterable<{ cid: CID, bytes: AsyncIterable<Uint8Array> | Iterable<Uint8Array> }> | Iterable<{ cid: CID, bytes: AsyncIterable<Uint8Array> | Iterable<Uint8Array> }> }): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>()
  for await (const { cid, bytes } of store.getAll()) out.set(mh(cid), await collectBlock(bytes))
  return out
}

describe.each([
  ['pack', (dir: string) => new PackBlockstore(join(dir, 'blockstore'))],
  ['lmdb', (dir: string) => new LmdbBlockstore(join(dir, 'blockstore', 'blocks.mdb'))]
])('the %s blockstore', (_kind, make) => {
  it('keeps the blockstore contract: put, has, get, getAll, delete, across a reopen', async () => {
    const dir = await repos.dir()
    let store = make(dir)
    await store.open()
    const blocks = [random(10), random(5000), random(1 << 20), random(300_000)]
    const cids = await Promise.all(blocks.map(cidOf))
    for (const [i, b] of blocks.entries()) await store.put(cids[i], b)
    await store.put(cids[0], blocks[0]) // again: one copy
    for (const [i, b] of blocks.entries()) {
      expect(await store.has(cids[i])).toBe(true)
      expect(same(await collectBlock(store.get(cids[i])), b)).toBe(true)
    }
    await store.flush()
    await store.close()

    store = make(dir)
    await store.open()
    const got = await all(store)
    expect(got.size).toBe(4)
    for (const [i, b] of blocks.entries()) expect(same(got.get(mh(cids[i])) as Uint8Array, b)).toBe(true)
    await store.delete(cids[1])
    expect(await store.has(cids[1])).toBe(false)
    await expect(collectBlock(store.get(cids[1]))).rejects.toMatchObject({ name: 'NotFoundError' })
    expect((await all(store)).size).toBe(3)
    expect(store.usage().blocks).toBe(3)
    await store.close()
  })
})

describe('PackBlockstore', () => {
  it('writes small blocks into one pack, counts live bytes, and frees a mostly-dead closed pack by compaction', async () => {
    const dir = join(await repos.dir(), 'blockstore')
    let store = new PackBlockstore(dir)
    await store.open()
    const blocks = Array.from({ length: 200 }, (_, i) => random(100 + i))
    const cids = await Promise.all(blocks.map(cidOf))
    await Promise.all(blocks.map(async (b, i) => await store.put(cids[i], b)))
    await store.flush()
    const total = blocks.reduce((n, b) => n + b.length, 0)
    expect(store.usage()).toEqual({ bytes: total, diskBytes: total, blocks: 200 })
    expect(await readdir(join(dir, 'packs'))).toEqual(['00000001.pack'])
    await store.close()

    // Reopened, pack 1 is closed: deleting most of it compacts it into pack 2.
    store = new PackBlockstore(dir)
    await store.open()
    for (const cid of cids.slice(0, 150)) await store.delete(cid)
    await store.compacted()
    expect(await readdir(join(dir, 'packs'))).toEqual(['00000002.pack'])
    const kept = blocks.slice(150).reduce((n, b) => n + b.length, 0)
    // (compacted once half was dead; what was deleted after that is dead space in the open pack)
    const use = store.usage()
    expect(use).toMatchObject({ bytes: kept, blocks: 50 })
    expect(use.diskBytes).toBeLessThan(total / 2)
    expect(use.diskBytes).toBe((await stat(join(dir, 'packs', '00000002.pack'))).size)
    for (const [i, cid] of cids.entries()) {
      expect(await store.has(cid)).toBe(i >= 150)
      if (i >= 150) expect(same(await collectBlock(store.get(cid)), blocks[i])).toBe(true)
    }
    await store.close()
  })

  it('serves no corrupted block: a block whose bytes changed on disk is dropped and reads as absent', async () => {
    const repo = await repos.dir()
    let store = new PackBlockstore(join(repo, 'blockstore'))
    await store.open()
    const a = random(4000)
    const ca = await cidOf(a)
    await store.put(ca, a)
    await store.close()
    expect(await corruptBlocks(repo)).toBe(1)
    store = new PackBlockstore(join(repo, 'blockstore'))
    await store.open()
    await expect(collectBlock(store.get(ca))).rejects.toMatchObject({ name: 'NotFoundError' })
    expect(await store.has(ca)).toBe(false) // the entry is gone: a fetch can store it again
    await store.put(ca, a)
    expect(same(await collectBlock(store.get(ca)), a)).toBe(true)
    await store.close()
  })

  it('readMany: many blocks by index, close ones with one read each run, every one checked; absent, foreign-hash and corrupted ones undefined', async () => {
    const repo = await repos.dir()
    let store = new PackBlockstore(join(repo, 'blockstore'))
    await store.open()
    // small blocks and larger ones: more than one run of readBatchBytes
    const blocks = [...Array.from({ length: 300 }, (_, i) => random(1 + (i * 37) % 5000)), random(300_000), random(900_000), random(1 << 20)]
    const cids = await Promise.all(blocks.map(cidOf))
    for (const [i, b] of blocks.entries()) await store.put(cids[i], b)
    const absent = await cidOf(random(10))
    const identity = CID.createV1(raw.code, identityHash.digest(Buffer.from('inline')))
    const order = [...cids.keys()].reverse() // any order, and a repeat
    const ask = [...order.map(i => cids[i]), absent, identity, cids[5]]
    const check = (got: Array<Uint8Array | undefined>, bad: number[] = []): void => {
      expect(got).toHaveLength(ask.length)
      for (const [j, i] of order.entries()) {
        if (bad.includes(i)) expect(got[j], `block ${i}`).toBeUndefined()
        else expect(same(got[j] as Uint8Array, blocks[i]), `block ${i}`).toBe(true)
      }
      expect(got[order.length]).toBeUndefined()
      expect(got[order.length + 1]).toBeUndefined()
      expect(same(got[order.length + 2] as Uint8Array, blocks[5])).toBe(true)
    }
    check(await store.readMany(ask)) // queued (from memory) or written, whichever
    await store.flush()
    check(await store.readMany(ask)) // from the pack
    await store.close()

    // one byte flipped in block 100 on disk: only that one is undefined, and its entry is dropped
    await corruptPackedBlock(repo, cids[100])
    store = new PackBlockstore(join(repo, 'blockstore'))
    await store.open()
    let reads = 0
    for (const p of (store as unknown as { packs: Map<number, { fh: { read: (...a: unknown[]) => Promise<unknown> } }> }).packs.values()) {
      const read = p.fh.read.bind(p.fh)
      p.fh.read = async (...a: unknown[]) => { reads++; return await read(...a) }
    }
    check(await store.readMany(ask), [100])
    expect(reads).toBeLessThanOrEqual(6) // ~3.3 MB in runs of ≤ 1 MiB, not a read per block (303)
    expect(await store.has(cids[100])).toBe(false)
    await store.close()
  })

  it('hashes a block on its first read in a run only; with verifyEveryRead on every read; a new run hashes again', async () => {
    const repo = await repos.dir()
    let store = new PackBlockstore(join(repo, 'blockstore'))
    await store.open()
    const a = random(4000)
    const b = random(4000)
    const [ca, cb] = await Promise.all([cidOf(a), cidOf(b)])
    await store.put(ca, a)
    await store.put(cb, b)
    await store.close()

    store = new PackBlockstore(join(repo, 'blockstore'))
    await store.open()
    const every = new PackBlockstore(join(await repos.dir(), 'blockstore'), { verifyEveryRead: true })
    await every.open()
    await every.put(ca, a)
    await every.flush()
    expect(same(await collectBlock(store.get(ca)), a)).toBe(true) // first read: hashed
    expect(same(await collectBlock(every.get(ca)), a)).toBe(true)
    // changed after that read: the default store takes the bytes it verified at that place as
    // verified (no second hash); the one that hashes every read drops the block
    await corruptPackedBlock(repo, ca)
    await corruptPackedBlock(join(every.path, '..'), ca)
    const again = await collectBlock(store.get(ca))
    expect(same(again, a)).toBe(false)
    await expect(collectBlock(every.get(ca))).rejects.toMatchObject({ name: 'NotFoundError' })
    // a block not read yet in this run is hashed at its first read, by get and by readMany
    await corruptPackedBlock(repo, cb)
    await expect(collectBlock(store.get(cb))).rejects.toMatchObject({ name: 'NotFoundError' })
    await store.close()
    await every.close()
    // the next run (a restart, or a crash's torn tail) hashes again
    store = new PackBlockstore(join(repo, 'blockstore'))
    await store.open()
    expect(await store.readMany([ca])).toEqual([undefined])
    expect(await store.has(ca)).toBe(false)
    await store.close()
  })

  it('verifiedSpans / readVerified: where verified blocks lie, read back as one run; nothing for blocks not verified, a compacted pack, or with verifyEveryRead', async () => {
    const dir = join(await repos.dir(), 'blockstore')
    let store = new PackBlockstore(dir)
    await store.open()
    const blocks = Array.from({ length: 50 }, (_, i) => random(1000 + i))
    const cids = await Promise.all(blocks.map(cidOf))
    for (const [i, b] of blocks.entries()) await store.put(cids[i], b)
    await store.flush()
    expect(store.verifiedSpans(cids).every(s => s == null)).toBe(true) // written, not read yet
    const buf = Buffer.alloc(blocks[0].length)
    expect(await store.readVerified({ pack: 1, offset: 0, length: buf.length }, buf)).toBe(0)
    // blocks 0–39 read: verified, back to back in the pack
    const got = await store.readMany(cids.slice(0, 40))
    expect(got.every((g, i) => same(g as Uint8Array, blocks[i]))).toBe(true)
    const spans = store.verifiedSpans(cids)
    expect(spans.slice(40).every(s => s == null)).toBe(true)
    for (let i = 1; i < 40; i++) expect(spans[i]?.offset).toBe((spans[i - 1]?.offset ?? NaN) + blocks[i - 1].length)
    // one read of the whole run gives the 40 blocks' bytes in order
    const first = spans[0] as { pack: number, offset: number, length: number }
    const runBytes = blocks.slice(0, 40).reduce((n, b) => n + b.length, 0)
    const run = Buffer.alloc(runBytes)
    expect(await store.readVerified({ ...first, length: runBytes }, run)).toBe(runBytes)
    expect(Buffer.compare(run, Buffer.concat(blocks.slice(0, 40)))).toBe(0)
    // a run reaching into unverified bytes (block 40) is refused
    const over = Buffer.alloc(runBytes + 10)
    expect(await store.readVerified({ ...first, length: runBytes + 10 }, over)).toBe(0)
    // a buffer longer than the span is refused too
    expect(await store.readVerified(first, Buffer.alloc(first.length + 1))).toBe(0)
    await store.close()

    // pack 1 closed, mostly deleted: compacted away; what was verified there is forgotten
    store = new PackBlockstore(dir)
    await store.open()
    await store.readMany(cids)
    const before = store.verifiedSpans(cids.slice(45)) as Array<{ pack: number, offset: number, length: number }>
    expect(before.every(s => s?.pack === 1)).toBe(true)
    for (const cid of cids.slice(0, 45)) await store.delete(cid)
    await store.compacted()
    expect(await readdir(join(dir, 'packs'))).toEqual(['00000002.pack'])
    expect(await store.readVerified(before[0], Buffer.alloc(before[0].length))).toBe(0)
    expect(store.verifiedSpans(cids.slice(45)).every(s => s == null || s.pack === 2)).toBe(true)
    await store.close()

    const every = new PackBlockstore(dir, { verifyEveryRead: true })
    await every.open()
    await every.readMany(cids.slice(45))
    expect(every.verifiedSpans(cids.slice(45)).every(s => s == null)).toBe(true)
    await every.close()
  })

  it('readMany reads no more than twice the bytes it wants when other blocks lie between them, and no more than maxBytes', async () => {
    const store = new PackBlockstore(join(await repos.dir(), 'blockstore'))
    await store.open()
    // small wanted blocks, each followed by a larger one of another file (two fetches at once)
    const wanted = Array.from({ length: 200 }, () => random(300))
    const between = Array.from({ length: 200 }, () => random(20_000))
    const cids = await Promise.all(wanted.map(cidOf))
    for (const [i, b] of wanted.entries()) {
      await store.put(cids[i], b)
      await store.put(await cidOf(between[i]), between[i])
    }
    await store.flush()
    let bytes = 0
    for (const p of (store as unknown as { packs: Map<number, { fh: { read: (...a: any[]) => Promise<any> } }> }).packs.values()) {
      const read = p.fh.read.bind(p.fh)
      p.fh.read = async (...a: any[]) => { bytes += a[2] as number; return await read(...a) }
    }
    const got = await store.readMany(cids)
    for (const [i, b] of wanted.entries()) expect(same(got[i] as Uint8Array, b)).toBe(true)
    expect(bytes).toBeLessThanOrEqual(2 * 200 * 300)
    // maxBytes: blocks past it are left to the caller (a DAG that lies about its leaf sizes gets no more in memory)
    const capped = await store.readMany(cids.slice(0, 10), { maxBytes: 5 * 300 })
    expect(capped.slice(0, 5).every((b, i) => b != null && same(b, wanted[i]))).toBe(true)
    expect(capped.slice(5).every(b => b == null)).toBe(true)
    await store.close()
  })

  it('writes a batch of more fetched blocks than one writev takes (IOV_MAX 1024), each readable after a reopen', async () => {
    const dir = await repos.dir()
    let store = new PackBlockstore(join(dir, 'blockstore'))
    await store.open()
    // at least 16 random bytes each: no two alike (a duplicate is queued once, putFetched false)
    const blocks = Array.from({ length: 3000 }, () => random(16 + Math.floor(Math.random() * 200)))
    const cids = await Promise.all(blocks.map(cidOf))
    // queued in one turn of the event loop: one batch
    blocks.forEach((b, i) => { expect(store.putFetched(cids[i], b)).toBe(true) })
    await store.flush()
    await store.close()
    store = new PackBlockstore(join(dir, 'blockstore'))
    await store.open()
    for (const [i, cid] of cids.entries()) expect(same(await collectBlock(store.get(cid)), blocks[i])).toBe(true)
    await store.close()
  })

  it('a put after a failed write throws the write error once; flush reports it', async () => {
    const store = new PackBlockstore(join(await repos.dir(), 'blockstore'))
    await store.open()
    const a = random(100)
    const ca = await cidOf(a)
    ;(store as unknown as { queue: WriteBehindQueue }).queue.fail(new Error('disk gone'))
    await expect(store.put(ca, a)).rejects.toThrow('disk gone')
    await store.put(ca, a)
    await store.flush()
    await store.close()
  })
})

describe('a repo written by blockstore-fs (earlier versions)', () => {
  it('keeps its blocks readable and deletable; new blocks go to the pack store; getAll has both once', async () => {
    const repo = await repos.dir()
    const old = new RepoBlockstore(join(repo, 'blocks'))
    await old.open()
    const a = random(3000)
    const b = random(70_000)
    const [ca, cb] = [await cidOf(a), await cidOf(b)]
    await old.put(ca, a)
    await old.put(cb, b)
    await old.close()

    const store = await createLocalBlockstore(repo)
    expect(store).toBeInstanceOf(PackBlockstore)
    await store.open()
    expect(same(await collectBlock(store.get(ca)), a)).toBe(true)
    expect(await store.has(cb)).toBe(true)
    const c = random(500)
    const cc = await cidOf(c)
    await store.put(cc, c)
    await store.put(ca, a) // already there (legacy): stored again in a pack, listed once
    expect([...(await all(store)).keys()].sort()).toEqual([ca, cb, cc].map(mh).sort())
    await store.delete(cb)
    expect(await store.has(cb)).toBe(false)
    await store.close()
    expect((await stat(join(repo, 'blockstore', 'index.mdb'))).isFile()).toBe(true)

    // 'fs' keeps a blockstore-fs repo as it is; a repo with a pack index stays pack whatever is asked.
    expect(await createLocalBlockstore(repo, { kind: 'fs' })).toBeInstanceOf(PackBlockstore)
    const fsRepo = await repos.dir()
    await mkdir(join(fsRepo, 'blocks', 'AB'), { recursive: true })
    await writeFile(join(fsRepo, 'blocks', 'AB', 'x.data'), 'x')
    expect(await createLocalBlockstore(fsRepo, { kind: 'fs' })).toBeInstanceOf(RepoBlockstore)
    await expect(createLocalBlockstore(fsRepo, { kind: 'nope' as 'fs' })).rejects.toMatchObject({ code: 'ERR_INVALID_OPTION' })
  })
})
