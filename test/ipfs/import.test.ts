import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { unixfs } from '@helia/unixfs'
import { afterAll, describe, expect, it } from 'vitest'
import { buildEstargz, type BlobSegment, type SegmentSink } from '../../src/estargz/index.js'
import { UnixfsFileReader } from '../../src/ipfs/dag-reader.js'
import { DEFAULTS, importBytes, importSegments, importStream, type ImportProgress, type TocLeaf } from '../../src/ipfs/import.js'
import { leafMap, MemStore, random, streamOf, TempRepos } from './helpers.js'
import { makeTar } from '../../scripts/fixtures/tar.js'
import type { CID } from 'multiformats/cid'

const MiB = 1 << 20
const repos = new TempRepos()
afterAll(async () => { await repos.cleanup() })

/** Builds an eStargz blob of `tar` into `store`, recording the segments. */
async function buildAndImport (store: MemStore, tar: Uint8Array, opts: { kuboCompatible?: boolean, chunkSize?: number } = {}): Promise<{ cid: CID, size: number, blocks: number, segments: Array<Omit<BlobSegment, 'bytes'> & { length: number }>, blob: Buffer, toc?: TocLeaf }> {
  const segments: Array<Omit<BlobSegment, 'bytes'> & { length: number }> = []
  const parts: Uint8Array[] = []
  const r = await importSegments(store, async (sink: SegmentSink) => await buildEstargz(streamOf(tar), async (s) => {
    segments.push({ kind: s.kind, offset: s.offset, length: s.bytes.length })
    parts.push(Uint8Array.prototype.slice.call(s.bytes))
    await sink(s)
  }, { chunkSize: opts.chunkSize }), { kuboCompatible: opts.kuboCompatible })
  return { cid: r.cid, size: r.size, blocks: r.blocks, segments, blob: Buffer.concat(parts), ...(r.toc != null ? { toc: r.toc } : {}) }
}

describe('member-aligned import', () => {
  const tar = makeTar([
    { name: 'small.txt', data: random(3000) },
    { name: 'big.bin', data: random(5 * MiB + 123) }, // > one 4 MiB chunk: two data members, the first > 1 MiB
    { name: 'empty', data: new Uint8Array(0) },
    { name: 'mid.bin', data: random(1_500_000) },
    // a directory of small files, as most of a distribution's layer
    ...Array.from({ length: 12 }, (_, i) => ({ name: `lib/m${i}.py`, data: random(1500 + 200 * i) }))
  ])

  it('gathers small members into leaves of ≥ 16 KiB closed before a data member, cuts large data members into 1 MiB leaves of their own, and gives TOC and footer their own leaves', async () => {
    const store = new MemStore()
    const { cid, size, segments, blob } = await buildAndImport(store, tar)
    expect(size).toBe(blob.length)
    const leaves = await leafMap(store.getBlock, cid)
    const G = DEFAULTS.smallMemberLeafBytes
    // the rule, spelled out: where each leaf starts and how long it is
    const expected: Array<[number, number]> = []
    let open: [number, number] | undefined
    const close = (): void => { if (open != null) expected.push(open); open = undefined }
    for (const s of segments) {
      const own = s.kind === 'toc' || s.kind === 'footer' || s.length >= G
      if (own || (open != null && (open[1] + s.length > MiB || (s.kind === 'data' && open[1] >= G)))) close()
      if (own) {
        for (let at = 0; at < s.length; at += MiB) expected.push([s.offset + at, Math.min(MiB, s.length - at)])
      } else if (open == null) {
        open = [s.offset, s.length]
      } else {
        open[1] += s.length
      }
    }
    close()
    expect(leaves.map(l => [l.offset, l.size])).toEqual(expected)
    // what the rule is for: fewer leaves than members, a small file's data and the next tar
    // header in one leaf, and no leaf ends inside a member
    const starts = new Set(leaves.map(l => l.offset))
    expect(leaves.length).toBeLessThan(segments.length / 2)
    const smalls = segments.filter(s => s.kind === 'data' && s.length < G)
    expect(smalls.length).toBeGreaterThanOrEqual(10)
    for (const d of smalls) {
      const next = segments[segments.indexOf(d) + 1]
      if (next.kind === 'header') expect(starts.has(next.offset)).toBe(false)
    }
    for (const s of segments) {
      if (s.kind === 'toc' || s.kind === 'footer' || (s.kind === 'data' && s.length >= G)) expect(starts.has(s.offset)).toBe(true)
    }
    const memberEnds = new Set(segments.map(s => s.offset + s.length))
    for (const l of leaves) {
      const inBig = segments.some(s => s.kind === 'data' && s.length >= G && l.offset >= s.offset && l.offset + l.size < s.offset + s.length)
      expect(inBig || memberEnds.has(l.offset + l.size)).toBe(true)
    }
    expect(leaves.every(l => l.size <= MiB)).toBe(true)
    expect(segments.filter(s => s.kind === 'data' && s.length >= G).length).toBeGreaterThanOrEqual(3)
    const toc = segments.find(s => s.kind === 'toc')
    const footer = segments.find(s => s.kind === 'footer')
    expect(leaves.find(l => l.offset === toc?.offset)?.size).toBe(toc?.length)
    expect(leaves.at(-1)).toMatchObject({ offset: footer?.offset, size: 51 })
    // the leaves hold the blob's bytes, verified through the CIDs
    const joined = Buffer.concat(await Promise.all(leaves.map(async l => await store.getBlock(l.cid))))
    expect(Buffer.compare(joined, blob)).toBe(0)
    expect(cid.version).toBe(1)
    expect(leaves.every(l => l.cid.code === 0x55 && l.cid.multihash.code === 0x12)).toBe(true)
  })

  it('never makes a leaf over 1 MiB: a big tar header (long PAX records) gets leaves of its own, and so does any member when leaves may gather more than 1 MiB', async () => {
    const kinds: Array<[BlobSegment['kind'], number]> = [['header', MiB + MiB / 2], ['data', 100], ['header', 300], ['data', 3000], ['header', 200], ['data', 2 * MiB + 7], ['toc', 5000], ['footer', 51]]
    const members = kinds.map(([kind, n]) => ({ kind, bytes: random(n) }))
    for (const group of [undefined, 4 * MiB]) {
      const store = new MemStore()
      const r = await importSegments(store, async (sink) => {
        let offset = 0
        for (const m of members) { await sink({ ...m, offset }); offset += m.bytes.length }
      }, group == null ? {} : { smallMemberLeafBytes: group })
      const leaves = await leafMap(store.getBlock, r.cid)
      expect(leaves.every(l => l.size <= MiB)).toBe(true)
      const joined = Buffer.concat(await Promise.all(leaves.map(async l => await store.getBlock(l.cid))))
      expect(Buffer.compare(joined, Buffer.concat(members.map(m => m.bytes)))).toBe(0)
    }
    await expect(importSegments(new MemStore(), async () => {}, { smallMemberLeafBytes: -1 })).rejects.toThrow(/smallMemberLeafBytes/)
  })

  it('names the TOC member\'s own leaf, stored with the blob (kubo-compatible leaves are not member-aligned: none)', async () => {
    const store = new MemStore()
    const { cid, blob, segments, toc } = await buildAndImport(store, tar)
    const member = segments.find(s => s.kind === 'toc')
    expect(toc?.offset).toBe(member?.offset)
    const leaves = await leafMap(store.getBlock, cid)
    expect(leaves.find(l => l.offset === toc?.offset)?.cid.toString()).toBe(toc?.cid.toString())
    const bytes = await store.getBlock(toc?.cid as CID)
    expect(Buffer.compare(Buffer.from(bytes), blob.subarray(member?.offset, (member?.offset ?? 0) + (member?.length ?? 0)))).toBe(0)
    expect((await buildAndImport(new MemStore(), tar, { kuboCompatible: true })).toc).toBeUndefined()
  })

  it('is deterministic: the same layer twice gives the same CID', async () => {
    const a = await buildAndImport(new MemStore(), tar)
    const b = await buildAndImport(new MemStore(), tar)
    expect(a.cid.equals(b.cid)).toBe(true)
  })

  it('kubo-compatible mode gives the CID ipfs-unixfs-importer gives with Kubo settings', async () => {
    const store = new MemStore()
    const { cid, blob } = await buildAndImport(store, tar, { kuboCompatible: true })
    let ref: CID | undefined
    for await (const e of importer([{ content: [blob] }], new MemStore(), {
      cidVersion: 1, rawLeaves: true, reduceSingleLeafToSelf: true, chunker: fixedSize({ chunkSize: 256 * 1024 }), layout: balanced({ maxChildrenPerNode: 174 })
    })) ref = e.cid
    expect(cid.toString()).toBe(ref?.toString())
    expect((await importBytes(new MemStore(), blob, { kuboCompatible: true })).cid.toString()).toBe(ref?.toString())
    const leaves = await leafMap(store.getBlock, cid)
    expect(leaves.slice(0, -1).every(l => l.size === 256 * 1024)).toBe(true)
  })

  it('shares the leaves of a file that two different layers contain (and kubo-compatible mode does not)', async () => {
    const shared = random(6 * MiB + 4321)
    const tarA = makeTar([{ name: 'a/readme', data: random(700) }, { name: 'a/lib.so', data: shared }, { name: 'a/z', data: random(20_000) }])
    const tarB = makeTar([{ name: 'etc/conf', data: random(12_345) }, { name: 'x', data: random(333) }, { name: 'usr/lib/other-name.so', data: shared }])
    const sharedBytes = async (kuboCompatible: boolean): Promise<{ shared: number, total: number }> => {
      const sa = new MemStore()
      const sb = new MemStore()
      const a = await buildAndImport(sa, tarA, { kuboCompatible })
      const b = await buildAndImport(sb, tarB, { kuboCompatible })
      const la = await leafMap(sa.getBlock, a.cid)
      const lb = new Set((await leafMap(sb.getBlock, b.cid)).map(l => l.cid.toString()))
      return { shared: la.filter(l => lb.has(l.cid.toString())).reduce((n, l) => n + l.size, 0), total: a.size }
    }
    const aligned = await sharedBytes(false)
    const kubo = await sharedBytes(true)
    expect(aligned.shared / aligned.total).toBeGreaterThan(0.95)
    expect(kubo.shared / kubo.total).toBeLessThan(0.1)
  })

  it('reports progress in bytes', async () => {
    const events: ImportProgress[] = []
    const data = random(2 * MiB + 5)
    const r = await importBytes(new MemStore(), data, { onProgress: (p) => events.push(p) })
    expect(r.size).toBe(data.length)
    expect(events.at(-1)).toEqual({ bytes: data.length, leaves: 3 })
  })

  it('propagates a producer failure and a blockstore failure', async () => {
    const boom = new Error('producer failed')
    await expect(importSegments(new MemStore(), async (sink) => {
      await sink({ kind: 'header', offset: 0, bytes: random(100) })
      throw boom
    })).rejects.toBe(boom)
    const failing = { put: async (): Promise<CID> => { throw new Error('disk full') } }
    await expect(importSegments(failing, async (sink) => await buildEstargz(streamOf(tar), sink))).rejects.toThrow('disk full')
  })

  it('imports while the producer runs, never letting it run far ahead', async () => {
    const member = random(2 * MiB)
    let pushed = 0
    let maxLag = 0
    let firstProgressAt = -1
    const r = await importSegments(new MemStore(), async (sink) => {
      for (let i = 0; i < 50; i++) {
        await sink({ kind: 'data', offset: pushed, bytes: member })
        pushed += member.length
      }
    }, {
      onProgress: (p) => {
        if (firstProgressAt < 0) firstProgressAt = pushed
        maxLag = Math.max(maxLag, pushed - p.bytes)
      }
    })
    expect(r.size).toBe(100 * MiB)
    expect(firstProgressAt).toBeLessThan(20 * MiB) // leaves were stored long before the end
    expect(maxLag).toBeLessThanOrEqual(32 * MiB) // bounded: a few members plus leaves in flight
  })

  it('rejects segments out of order', async () => {
    await expect(importSegments(new MemStore(), async (sink) => {
      await sink({ kind: 'header', offset: 10, bytes: random(100) })
    })).rejects.toMatchObject({ code: 'ERR_INVALID_OPTION' })
  })

  it('stops on abort', async () => {
    const ac = new AbortController()
    ac.abort()
    await expect(importSegments(new MemStore(), async (sink) => await buildEstargz(streamOf(tar), sink), { signal: ac.signal })).rejects.toMatchObject({ name: 'AbortError' })
  })
})

describe('plain import', () => {
  it('uses 1 MiB raw leaves, CIDv1, and a raw CID for a single leaf (as @helia/unixfs)', async () => {
    const store = new MemStore()
    const small = await importBytes(store, random(1000))
    expect(small.cid.code).toBe(0x55)
    const big = await importStream(store, streamOf(random(3 * MiB + 1)))
    const leaves = await leafMap(store.getBlock, big.cid)
    expect(leaves.map(l => l.size)).toEqual([MiB, MiB, MiB, 1])
    expect(big.cid.version).toBe(1)
  })

  it('gives the CIDs @helia/unixfs addBytes gives', async () => {
    const node = await repos.node()
    const fs = unixfs(node.helia)
    for (const n of [10, MiB, 3 * MiB + 7]) {
      const data = random(n)
      expect((await importBytes(new MemStore(), data)).cid.toString()).toBe((await fs.addBytes(data)).toString())
    }
  })

  it('imports an empty blob as the empty raw leaf', async () => {
    const store = new MemStore()
    const empty = await importBytes(store, new Uint8Array(0))
    expect(empty.cid.toString()).toBe('bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku')
    expect(empty.size).toBe(0)
    const reader = await UnixfsFileReader.open(empty.cid, store.getBlock)
    expect(reader.size).toBe(0)
    expect((await reader.read(0, 10)).length).toBe(0)
  })
})
