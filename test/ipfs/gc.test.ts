import * as dagPb from '@ipld/dag-pb'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { PinNotFoundError, getPin, listPins, openRepo, pinRoot, unpinRoot, type OpenRepo } from '../../src/ipfs/index.js'
import { silentLogger } from '../../src/logging.js'
import { TempRepos, random } from './helpers.js'

async function rawBlock (bytes: Uint8Array): Promise<{ cid: CID, bytes: Uint8Array }> {
  return { cid: CID.createV1(raw.code, await sha256.digest(bytes)), bytes }
}

async function pbNode (links: CID[]): Promise<{ cid: CID, bytes: Uint8Array }> {
  const bytes = dagPb.encode(dagPb.prepare({ Data: new Uint8Array([8, 1]), Links: links.map(l => ({ Hash: l, Name: l.toString().slice(-6), Tsize: 1 })) }))
  return { cid: CID.createV1(dagPb.code, await sha256.digest(bytes)), bytes }
}

describe('garbage collection, pins and leases (src/ipfs/gc.ts, src/ipfs/pins.ts)', () => {
  const repos = new TempRepos()
  let repo: OpenRepo

  beforeAll(async () => {
    repo = await openRepo({ logger: silentLogger() }, { repo: await repos.dir() })
  })

  afterAll(async () => {
    await repo?.close()
    await repos.cleanup()
  })

  const has = async (cid: CID): Promise<boolean> => await repo.node.localBlockstore.has(cid)
  const put = async (b: { cid: CID, bytes: Uint8Array }): Promise<void> => { await repo.node.localBlockstore.put(b.cid, b.bytes) }
  const pins = (): Parameters<typeof pinRoot>[0] => ({ pins: repo.index.pins, localBlockstore: repo.node.localBlockstore })

  it('removes unpinned blocks, keeps a pinned DAG, and reports bytes and blocks freed', async () => {
    const leaf = await rawBlock(random(1000))
    const root = await pbNode([leaf.cid])
    const loose = await rawBlock(random(3000))
    for (const b of [leaf, root, loose]) await put(b)
    await pinRoot(pins(), root.cid)
    const dry = await repo.collector.run({ dryRun: true })
    expect(dry.freedBlocks).toBe(1)
    expect(dry.freedBytes).toBe(3000)
    expect(await has(loose.cid)).toBe(true)
    const r = await repo.collector.run()
    expect([r.freedBlocks, r.freedBytes]).toEqual([1, 3000])
    expect(await has(loose.cid)).toBe(false)
    expect(await has(leaf.cid)).toBe(true)
    expect(await has(root.cid)).toBe(true)
    await unpinRoot(pins(), root.cid)
    const after = await repo.collector.run()
    expect(after.freedBlocks).toBe(2)
    expect(await has(root.cid)).toBe(false)
  })

  it('a block written under a lease before its pin survives a collection in between (the push race)', async () => {
    const block = await rawBlock(random(500))
    const lease = repo.collector.guard.lease()
    await put(block)
    await repo.collector.run()
    expect(await has(block.cid)).toBe(true)
    lease.release()
    await repo.collector.run()
    expect(await has(block.cid)).toBe(false)
  })

  it('a block written while a collection runs is kept by that run', async () => {
    const block = await rawBlock(random(700))
    // written during the mark phase: after the run decided what is live
    repo.collector.setRoots(async () => { await put(block); return [] })
    try {
      await repo.collector.run()
    } finally {
      repo.collector.setRoots(undefined)
    }
    expect(await has(block.cid)).toBe(true)
    await repo.collector.run()
    expect(await has(block.cid)).toBe(false)
  })

  it('extra roots (mounted layers) keep what of their DAG is stored, absent blocks skipped', async () => {
    const present = await rawBlock(random(100))
    const absent = await rawBlock(random(100))
    const root = await pbNode([present.cid, absent.cid])
    await put(present)
    await put(root)
    repo.collector.setRoots(async () => [root.cid])
    try {
      const r = await repo.collector.run()
      expect(r.freedBlocks).toBe(0)
    } finally {
      repo.collector.setRoots(undefined)
    }
    expect(await has(present.cid)).toBe(true)
    await repo.collector.run()
    expect(await has(present.cid)).toBe(false)
  })

  it('under a cap, the least recently used unpinned blocks go first', async () => {
    const [a, b, c] = await Promise.all([random(1000), random(1000), random(1000)].map(rawBlock))
    for (const x of [a, b, c]) await put(x)
    await repo.node.localBlockstore.has(a.cid) // a used last: b is the oldest, then c
    const total = (await repo.collector.run({ dryRun: true })).bytes
    const r = await repo.collector.run({ targetBytes: total - 1000 })
    expect(r.freedBlocks).toBe(1)
    expect([await has(a.cid), await has(b.cid), await has(c.cid)]).toEqual([true, false, true])
    await repo.collector.run()
  })

  it('a lazy pin keeps what is stored now and later; unpinning walks only what is there', async () => {
    const got = await rawBlock(random(200))
    const later = await rawBlock(random(200))
    const never = await rawBlock(random(200))
    const root = await pbNode([got.cid, later.cid, never.cid])
    await put(root)
    await put(got)
    expect(await pinRoot(pins(), root.cid, { lazy: true, metadata: { name: 'x' } })).toBe(true)
    await put(later) // read after the pull
    await repo.collector.run()
    expect([await has(root.cid), await has(got.cid), await has(later.cid)]).toEqual([true, true, true])
    expect(await getPin(pins(), root.cid)).toMatchObject({ type: 'recursive', mode: 'lazy', metadata: { name: 'x', lazy: true } })
    // a complete pin (a push of the same image) replaces the lazy one, only when every block is here
    await expect(pinRoot(pins(), root.cid)).rejects.toMatchObject({ code: 'ERR_BLOCK_NOT_FOUND' })
    await unpinRoot(pins(), root.cid)
    expect(await getPin(pins(), root.cid)).toBeUndefined()
    await repo.collector.run()
    expect(await has(later.cid)).toBe(false)
  })

  it('unpinning a CID that has no pin fails with ERR_PIN_NOT_FOUND', async () => {
    const b = await rawBlock(random(10))
    const err = await unpinRoot(pins(), b.cid).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(PinNotFoundError)
    expect((err as PinNotFoundError).code).toBe('ERR_PIN_NOT_FOUND')
    const all = []
    for await (const p of listPins(pins())) all.push(p)
    expect(all).toEqual([])
  })
})
