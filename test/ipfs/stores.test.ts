import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { Key } from 'interface-datastore'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { afterAll, describe, expect, it } from 'vitest'
import { collectBlock } from '../../src/ipfs/dag-reader.js'
import { RepoBlockstore, RepoDatastore } from '../../src/ipfs/stores.js'
import { TempRepos, random } from './helpers.js'

const repos = new TempRepos()
afterAll(async () => { await repos.cleanup() })

const cidOf = async (b: Uint8Array): Promise<CID> => CID.createV1(raw.code, await sha256.digest(b))

async function filesUnder (dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { recursive: true, withFileTypes: true })).filter(e => e.isFile()).map(e => e.name)
  } catch {
    return []
  }
}

describe('RepoBlockstore', () => {
  it('reads a block whole (one piece); a missing one is a NotFoundError', async () => {
    const store = new RepoBlockstore(join(await repos.dir(), 'blocks'))
    await store.open()
    const bytes = random(1 << 20)
    const cid = await cidOf(bytes)
    await store.put(cid, bytes)
    const pieces: Uint8Array[] = []
    for await (const p of store.get(cid)) pieces.push(p)
    expect(pieces.length).toBe(1)
    expect(Buffer.compare(Buffer.from(pieces[0]), bytes)).toBe(0)
    await expect(collectBlock(store.get(await cidOf(random(10))))).rejects.toMatchObject({ name: 'NotFoundError' })
    await store.close()
  })

  it('writes fetched blocks behind: visible at once, on disk after flush, a delete waits for the write', async () => {
    const dir = join(await repos.dir(), 'blocks')
    const store = new RepoBlockstore(dir)
    await store.open()
    const a = random(300_000)
    const b = random(1000)
    const [ca, cb] = [await cidOf(a), await cidOf(b)]
    expect(store.putFetched(ca, a)).toBe(true)
    expect(store.putFetched(ca, a)).toBe(false) // already under way
    expect(store.putFetched(cb, b)).toBe(true)
    expect(store.pendingWrites).toBe(2)
    expect(await store.has(ca)).toBe(true)
    expect(Buffer.compare(Buffer.from(await collectBlock(store.get(ca))), a)).toBe(0)
    expect(await store.put(ca, a)).toEqual(ca) // returns at once: the write is under way
    await store.delete(cb)
    expect(await store.has(cb)).toBe(false)
    await store.flush()
    expect(store.pendingWrites).toBe(0)

    const again = new RepoBlockstore(dir)
    await again.open()
    expect(Buffer.compare(Buffer.from(await collectBlock(again.get(ca))), a)).toBe(0)
    expect(await again.has(cb)).toBe(false)
    await store.close()
    await again.close()
  })
})

describe('RepoDatastore', () => {
  it('keeps libp2p peer records in memory, everything else on disk', async () => {
    const dir = join(await repos.dir(), 'datastore')
    const ds = new RepoDatastore(dir)
    await ds.open()
    const peer = new Key('/peers/bafzbeiexample')
    const pin = new Key('/pin/example')
    await ds.put(peer, Uint8Array.of(1, 2, 3))
    await ds.put(pin, Uint8Array.of(4))
    expect(await ds.has(peer)).toBe(true)
    expect([...await ds.get(peer)]).toEqual([1, 2, 3])
    const listed: string[] = []
    for await (const { key } of ds.query({ prefix: '/peers' })) listed.push(key.toString())
    expect(listed).toEqual(['/peers/bafzbeiexample'])
    const all: string[] = []
    for await (const key of ds.queryKeys({})) all.push(key.toString())
    expect(all.sort()).toEqual(['/peers/bafzbeiexample', '/pin/example'])
    expect(await filesUnder(join(dir, 'peers'))).toEqual([])
    await ds.delete(peer)
    await expect(ds.get(peer)).rejects.toMatchObject({ name: 'NotFoundError' })
    await ds.close()
  })

  it('a node writes no peer record to disk, even after streams to a peer', async () => {
    const a = await repos.node({ listen: ['/ip4/127.0.0.1/tcp/0'] })
    const b = await repos.node()
    await b.dial(a.multiaddrs()[0])
    for (let i = 0; i < 500 && b.exchange.peers().length === 0; i++) await new Promise(resolve => setTimeout(resolve, 10))
    const bytes = random(1000)
    const cid = await cidOf(bytes)
    await a.localBlockstore.put(cid, bytes)
    await collectBlock(b.helia.blockstore.get(cid, { signal: AbortSignal.timeout(5000) }))
    expect(b.fetchStats().exchangeBlocks).toBe(1)
    expect((await b.helia.libp2p.peerStore.get(a.peerId)).protocols.length).toBeGreaterThan(0) // in memory
    expect(await filesUnder(join(a.repo, 'datastore', 'peers'))).toEqual([])
    expect(await filesUnder(join(b.repo, 'datastore', 'peers'))).toEqual([])
  })
})
