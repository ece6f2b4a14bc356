import { mkdir, readdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { sha256Digest } from '../../src/estargz/index.js'
import { ChunkCache, MemoryLru } from '../../src/fs/cache.js'
import { silentLogger } from '../../src/logging.js'
import { fixtureBytes } from '../../scripts/fixtures/tar.js'
import { removeDir, tempDir } from './helpers.js'

const logger = silentLogger()

describe('MemoryLru', () => {
  it('evicts the least recently used entries beyond its byte cap', () => {
    const m = new MemoryLru(10)
    m.set('a', new Uint8Array(4))
    m.set('b', new Uint8Array(4))
    m.get('a')
    m.set('c', new Uint8Array(4))
    expect(m.has('a')).toBe(true)
    expect(m.has('b')).toBe(false)
    expect(m.bytes).toBe(8)
  })

  it('never keeps a bigger buffer alive behind a small view (what it holds is what it counts)', () => {
    const m = new MemoryLru(100)
    const big = new Uint8Array(1 << 20).fill(7)
    m.set('v', big.subarray(10, 20))
    const held = m.get('v') as Uint8Array
    expect(Array.from(held)).toEqual(new Array(10).fill(7))
    expect(held.buffer.byteLength).toBe(10)
    const pooled = Buffer.alloc(1 << 16, 9)
    m.set('b', pooled.subarray(100, 150)) // a Buffer: its slice() would not copy
    expect((m.get('b') as Uint8Array).buffer.byteLength).toBe(50)
    expect(Array.from(m.get('b') as Uint8Array)).toEqual(new Array(50).fill(9))
    const exact = new Uint8Array(5)
    m.set('e', exact)
    expect(m.get('e')).toBe(exact) // already exact: no copy
  })
})

describe('ChunkCache', () => {
  let dir: string
  beforeAll(async () => { dir = await tempDir('cache') })
  afterAll(async () => { await removeDir(dir) })

  it('stores chunks by digest, survives a restart, evicts LRU beyond its cap, drops corrupt files', async () => {
    const chunks = [1, 2, 3].map(i => fixtureBytes(i, 1000))
    const digests = chunks.map(c => sha256Digest(c))
    const c1 = new ChunkCache({ logger }, { dir, maxBytes: 2500, memoryBytes: 0 })
    await c1.start()
    for (const [i, c] of chunks.entries()) await c1.put(digests[i], c)
    expect(c1.has(digests[0])).toBe(false) // evicted: 3000 > 2500
    expect(c1.stats().evictions).toBe(1)
    const hex = digests[1].slice(7)
    expect(await readdir(join(dir, hex.slice(0, 2)))).toContain(hex)
    expect(Buffer.from(await c1.read(digests[2], 10, 20) ?? []).equals(chunks[2].subarray(10, 30))).toBe(true)
    await c1.stop()

    // A new process: entries found on disk are hashed before first use; a tampered one is dropped.
    await writeFile(join(dir, hex.slice(0, 2), hex), Buffer.alloc(1000, 1))
    const c2 = new ChunkCache({ logger }, { dir, maxBytes: 2500, memoryBytes: 0 })
    await c2.start()
    expect(c2.has(digests[1])).toBe(true)
    expect(await c2.read(digests[1], 0, 10)).toBeUndefined()
    expect(c2.stats().corruptFiles).toBe(1)
    expect(c2.has(digests[1])).toBe(false)
    expect(Buffer.from(await c2.get(digests[2]) ?? []).equals(chunks[2])).toBe(true)
  })

  it('an evicted chunk\'s file is gone when put resolves; a restart under a smaller cap evicts the oldest files and any over the cap', async () => {
    const sub = join(dir, 'smaller')
    const files = async (): Promise<string[]> => (await readdir(sub, { recursive: true })).filter(f => /[0-9a-f]{64}$/.test(f)).map(f => f.slice(-64)).sort()
    const chunks = [1, 2, 3, 4].map(i => fixtureBytes(200 + i, 1000))
    const digests = chunks.map(c => sha256Digest(c))
    const hexes = digests.map(d => d.slice(7))
    const c1 = new ChunkCache({ logger }, { dir: sub, maxBytes: 3000, memoryBytes: 0 })
    await c1.start()
    for (const [i, chunk] of chunks.entries()) {
      await c1.put(digests[i], chunk)
      await new Promise(resolve => setTimeout(resolve, 20)) // distinct mtimes: the restart's order
    }
    expect(await files()).toEqual(hexes.slice(1).sort())
    expect(c1.stats()).toMatchObject({ diskBytes: 3000, diskEntries: 3, evictions: 1 })
    await c1.stop()
    // a file bigger than the whole cap is removed too (it could never be kept)
    const big = fixtureBytes(300, 2500)
    const bigHex = sha256Digest(big).slice(7)
    await mkdir(join(sub, bigHex.slice(0, 2)), { recursive: true })
    await writeFile(join(sub, bigHex.slice(0, 2), bigHex), big)
    const c2 = new ChunkCache({ logger }, { dir: sub, maxBytes: 2000, memoryBytes: 0, verifyOnLoad: false })
    await c2.start()
    expect(await files()).toEqual(hexes.slice(2).sort())
    expect(c2.stats()).toMatchObject({ diskBytes: 2000, diskEntries: 2, evictions: 2 })
    expect(c2.has(digests[1])).toBe(false)
    expect(Buffer.from(await c2.get(digests[3]) ?? []).equals(chunks[3])).toBe(true)
    await c2.stop()
  })

  it('serves many concurrent range reads right while chunk files are evicted and their handles closed', async () => {
    const sub = join(dir, 'many')
    const chunks = Array.from({ length: 150 }, (_, i) => fixtureBytes(100 + i, 3000 + i))
    const digests = chunks.map(c => sha256Digest(c))
    // a cap that holds ~100 of them, and more chunks than the open-handle cache (64)
    const c = new ChunkCache({ logger }, { dir: sub, maxBytes: 100 * 3100, memoryBytes: 0 })
    await c.start()
    const reads: Array<Promise<void>> = []
    for (const [i, chunk] of chunks.entries()) {
      await c.put(digests[i], chunk)
      for (let k = Math.max(0, i - 70); k <= i; k += 7) {
        const off = (k * 13) % 2000
        reads.push(c.read(digests[k], off, 500).then((got) => {
          // evicted meanwhile is a miss, never wrong bytes
          if (got != null) expect(Buffer.from(got).equals(chunks[k].subarray(off, off + 500))).toBe(true)
        }))
      }
    }
    await Promise.all(reads)
    expect(c.stats().evictions).toBeGreaterThan(40)
    for (let k = 149; k > 120; k--) expect(Buffer.from(await c.read(digests[k], 0, 100) ?? []).equals(chunks[k].subarray(0, 100))).toBe(true)
    await c.stop()
  })
})

describe('ChunkCache.sweep (chunk-cache garbage collection)', () => {
  let dir: string
  beforeAll(async () => { dir = await tempDir('sweep') })
  afterAll(async () => { await removeDir(dir) })

  it('a cache directory removed under a running cache: the next writes make it again; write failures are counted', async () => {
    const cdir = join(dir, 'removed')
    const cache = new ChunkCache({ logger }, { dir: cdir, memoryBytes: 0 })
    await cache.start()
    const chunks = [1, 2, 3, 4].map(i => fixtureBytes(40 + i, 1000))
    const digests = chunks.map(c => sha256Digest(c))
    await cache.put(digests[0], chunks[0])
    await cache.put(digests[1], chunks[1])
    await rm(cdir, { recursive: true, force: true })
    // the known chunks' files are gone: misses, not errors
    for (const i of [0, 1]) expect(await cache.read(digests[i], 0, 10)).toBeUndefined()
    await cache.put(digests[2], chunks[2])
    await cache.put(digests[1], chunks[1]) // a fan-out directory made before
    expect(cache.stats().writeFailures).toBe(0)
    for (const i of [1, 2]) expect(Buffer.from(await cache.get(digests[i]) ?? []).equals(chunks[i])).toBe(true)
    expect(await readdir(join(cdir, 'tmp'))).toEqual([])
    // a file where the directory should be: the write fails, counted, the put does not throw
    await rm(cdir, { recursive: true, force: true })
    await writeFile(cdir, 'not a directory')
    await cache.put(digests[3], chunks[3])
    expect(cache.stats().writeFailures).toBe(1)
    await cache.stop()
    await rm(cdir, { force: true })
  })

  it('removes the entries not kept, from disk and memory; a dry run only counts them', async () => {
    const cache = new ChunkCache({ logger }, { dir: join(dir, 'sweep') })
    await cache.start()
    const keep = fixtureBytes(1, 1000)
    const drop = fixtureBytes(2, 3000)
    const dk = sha256Digest(keep)
    const dd = sha256Digest(drop)
    await cache.put(dk, keep)
    await cache.put(dd, drop)
    const kept = (hex: string): boolean => hex === dk.slice(7)
    expect(await cache.sweep(kept, { dryRun: true })).toEqual({ entries: 1, bytes: 3000 })
    expect(cache.has(dd)).toBe(true)
    expect(await cache.sweep(kept)).toEqual({ entries: 1, bytes: 3000 })
    expect(cache.has(dd)).toBe(false)
    expect(await cache.get(dd)).toBeUndefined()
    expect(await readdir(join(dir, 'sweep', dd.slice(7, 9)))).not.toContain(dd.slice(7))
    expect(await cache.get(dk)).toEqual(keep)
    await cache.stop()
  })
})
