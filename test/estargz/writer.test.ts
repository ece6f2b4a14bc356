import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import zlib from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  AbortError, EstargzReader, InvalidOptionError, MalformedTarError, MalformedTocError, PrioritizedFileNotFoundError, buildEstargz, buildEstargzFile,
  type BlobSegment
} from '../../src/estargz/index.js'
import { edgeEntries, fileContents, SMALL_CHUNK } from '../helpers/fixtures.js'
import { zstdRawFrame } from '../helpers/forge.js'
import { fixtureBytes, makeTar, type FixtureEntry } from '../../scripts/fixtures/tar.js'
import { sha256 } from '../../scripts/fixtures/digest.js'

async function * chunksOf (data: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size)
}

async function readerFor (blob: Buffer): Promise<EstargzReader> {
  return await EstargzReader.open(async (off, len) => blob.subarray(off, off + len), blob.length)
}

describe('eStargz writer', () => {
  let dir: string
  let tar: Buffer
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'esgz-writer-'))
    tar = makeTar(edgeEntries())
    writeFileSync(join(dir, 'edge.tar'), tar)
  })
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it('writes the same bytes whatever the concurrency, the input chunking or the run', async () => {
    const outs: Buffer[] = []
    for (const [concurrency, piece] of [[1, 512], [4, 1 << 20], [3, 7777], [1, 1 << 20]]) {
      const segs: Uint8Array[] = []
      await buildEstargz(chunksOf(tar, piece), async (s) => { segs.push(s.bytes) }, { chunkSize: SMALL_CHUNK, concurrency })
      outs.push(Buffer.concat(segs))
    }
    for (const o of outs) expect(o.equals(outs[0])).toBe(true)
  })

  it('accepts gzip and zstd input and produces the same blob as from the plain tar', async () => {
    const plain = join(dir, 'plain.esgz')
    const a = await buildEstargzFile(join(dir, 'edge.tar'), plain, { chunkSize: SMALL_CHUNK })
    writeFileSync(join(dir, 'edge.tar.gz'), zlib.gzipSync(tar))
    const b = await buildEstargzFile(join(dir, 'edge.tar.gz'), join(dir, 'gz.esgz'), { chunkSize: SMALL_CHUNK })
    writeFileSync(join(dir, 'edge.tar.zst'), zstdRawFrame(tar))
    const c = await buildEstargzFile(join(dir, 'edge.tar.zst'), join(dir, 'zst.esgz'), { chunkSize: SMALL_CHUNK })
    expect(b).toEqual(a)
    expect(c).toEqual(a)
    expect(readFileSync(join(dir, 'gz.esgz')).equals(readFileSync(plain))).toBe(true)
  })

  it('reports TOC digest, DiffID and sizes that match the blob', async () => {
    const segs: BlobSegment[] = []
    const r = await buildEstargz(chunksOf(tar, 65536), async (s) => { segs.push(s) }, { chunkSize: SMALL_CHUNK })
    const blob = Buffer.concat(segs.map(s => s.bytes))
    expect(r.size).toBe(blob.length)
    const plain = zlib.gunzipSync(blob)
    expect(r.uncompressedSize).toBe(plain.length)
    expect(r.diffID).toBe(sha256(plain))
    const reader = await readerFor(blob)
    expect(reader.tocDigest).toBe(r.tocDigest)
    expect(reader.tocOffset).toBe(r.tocOffset)
    // segments are contiguous, kinds in order: the blob starts with a header member and ends with TOC + footer
    let off = 0
    for (const s of segs) { expect(s.offset).toBe(off); off += s.bytes.length }
    expect(segs.at(-1)?.kind).toBe('footer')
    expect(segs.at(-2)?.kind).toBe('toc')
    expect(segs.at(-2)?.offset).toBe(r.tocOffset)
    expect(new Set(segs.map(s => s.kind))).toEqual(new Set(['header', 'data', 'toc', 'footer']))
    // every file reads back
    for (const [name, content] of fileContents(edgeEntries())) {
      expect(Buffer.from(await reader.readFile(name)).equals(content), name).toBe(true)
    }
  })

  it('keeps the last of duplicate entries, drops old TOCs and landmarks from the input', async () => {
    const input = makeTar([
      { name: 'dup', data: 'first' },
      { name: '.no.prefetch.landmark', data: '\x0f' },
      { name: 'stargz.index.json', data: '{"version":1,"entries":[]}' },
      { name: './dup', data: 'second!' }
    ])
    const segs: Uint8Array[] = []
    await buildEstargz(chunksOf(input, 1024), async (s) => { segs.push(s.bytes) })
    const reader = await readerFor(Buffer.concat(segs))
    expect(reader.toc.entries.map(e => e.name)).toEqual(['.no.prefetch.landmark', './dup'])
    expect(Buffer.from(await reader.readFile('dup')).toString()).toBe('second!')
  })

  it('handles an empty layer and a tar without an end-of-archive marker', async () => {
    for (const input of [Buffer.alloc(0), Buffer.alloc(1024), makeTar([{ name: 'f', data: 'x' }], { eof: false })]) {
      const segs: Uint8Array[] = []
      await buildEstargz(chunksOf(input, 100), async (s) => { segs.push(s.bytes) })
      const reader = await readerFor(Buffer.concat(segs))
      expect(reader.toc.entries[0].name).toBe('.no.prefetch.landmark')
    }
  })

  it('orders prioritized files with parents and hardlink targets first, then the landmark', async () => {
    const segs: Uint8Array[] = []
    await buildEstargz(join(dir, 'edge.tar'), async (s) => { segs.push(s.bytes) }, { prioritizedFiles: ['h/link-to-small', 'o/kept'] })
    const reader = await readerFor(Buffer.concat(segs))
    // as moveRec does it: the parent, then the hardlink target with its parent, then the link
    expect(reader.toc.entries.slice(0, 7).map(e => e.name)).toEqual(['h/', 'a/', 'a/owned', 'h/link-to-small', 'o/', 'o/kept', '.prefetch.landmark'])
    expect(reader.tree.prefetchOffset).toBeGreaterThan(0)
    await expect(buildEstargz(join(dir, 'edge.tar'), async () => {}, { prioritizedFiles: ['no/such'] })).rejects.toThrow(PrioritizedFileNotFoundError)
    const r = await buildEstargz(join(dir, 'edge.tar'), async () => {}, { prioritizedFiles: ['no/such', 'a/empty'], allowPrioritizedNotFound: true })
    expect(r.missedPrioritizedFiles).toEqual(['no/such'])
  })

  it('prioritizes from a compressed stream by spooling it, and removes the spool', async () => {
    const spoolDir = mkdtempSync(join(dir, 'spool-'))
    const segs: Uint8Array[] = []
    await buildEstargz(chunksOf(zlib.gzipSync(tar), 4096), async (s) => { segs.push(s.bytes) }, { prioritizedFiles: ['a/plus1.bin'], tmpDir: spoolDir })
    const reader = await readerFor(Buffer.concat(segs))
    expect(reader.toc.entries[1].name).toBe('a/plus1.bin')
    expect(readdirSync(spoolDir)).toEqual([])
  })

  it('splits files into chunks exactly like the reference (chunkSize on full chunks only)', async () => {
    const segs: Uint8Array[] = []
    await buildEstargz(chunksOf(tar, 1 << 20), async (s) => { segs.push(s.bytes) }, { chunkSize: SMALL_CHUNK })
    const reader = await readerFor(Buffer.concat(segs))
    const entriesOf = (name: string): Array<Record<string, unknown>> => {
      const i = reader.toc.entries.findIndex(e => e.name === name)
      const out = [reader.toc.entries[i]]
      for (let j = i + 1; reader.toc.entries[j]?.type === 'chunk'; j++) out.push(reader.toc.entries[j])
      return out.map(e => ({ type: e.type, chunkOffset: e.chunkOffset, chunkSize: e.chunkSize }))
    }
    expect(entriesOf('a/exact.bin')).toEqual([{ type: 'reg', chunkOffset: undefined, chunkSize: SMALL_CHUNK }])
    expect(entriesOf('a/double.bin')).toEqual([{ type: 'reg', chunkOffset: undefined, chunkSize: SMALL_CHUNK }, { type: 'chunk', chunkOffset: SMALL_CHUNK, chunkSize: SMALL_CHUNK }])
    expect(entriesOf('a/plus1.bin')).toEqual([{ type: 'reg', chunkOffset: undefined, chunkSize: SMALL_CHUNK }, { type: 'chunk', chunkOffset: SMALL_CHUNK, chunkSize: undefined }])
    const empty = reader.toc.entries.find(e => e.name === 'a/empty')
    expect(empty?.digest).toBe('sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
    expect(empty?.offset).toBeUndefined()
  })

  it('validates options and honours abort, leaving no output file', async () => {
    await expect(buildEstargz(join(dir, 'edge.tar'), async () => {}, { chunkSize: 0 })).rejects.toThrow(InvalidOptionError)
    await expect(buildEstargz(join(dir, 'edge.tar'), async () => {}, { compressionLevel: 11 })).rejects.toThrow(InvalidOptionError)
    const ac = new AbortController()
    const out = join(dir, 'aborted', 'x.esgz')
    const { mkdirSync } = await import('node:fs')
    mkdirSync(join(dir, 'aborted'))
    const big = makeTar([{ name: 'big', data: fixtureBytes(9, 8 << 20) }])
    const p = buildEstargzFile(chunksOf(big, 65536), out, { chunkSize: SMALL_CHUNK, signal: ac.signal })
    setTimeout(() => ac.abort(), 5)
    await expect(p).rejects.toThrow(AbortError)
    expect(readdirSync(join(dir, 'aborted'))).toEqual([])
  })

  it('refuses a layer the reader would refuse, with the reader\'s error, before the TOC or footer goes out', async () => {
    const hostile: Array<[string, FixtureEntry[]]> = [
      ['a path through a symlink', [{ name: 'dir/', type: 'dir' }, { name: 'victim', type: 'symlink', linkName: '/dir' }, { name: 'victim/file', data: 'x' }]],
      ['a path through a regular file', [{ name: 'f', data: 'x' }, { name: 'f/g', data: 'y' }]],
      ['a hardlink to a file not in the layer', [{ name: 'link', type: 'hardlink', linkName: 'not/in/layer' }]],
      ['a hardlink to a directory', [{ name: 'd/', type: 'dir' }, { name: 'link', type: 'hardlink', linkName: 'd' }]],
      ['hardlinks to each other', [{ name: 'a', type: 'hardlink', linkName: 'b' }, { name: 'b', type: 'hardlink', linkName: 'a' }]],
      ['a hardlink without target', [{ name: 'link', type: 'hardlink', linkName: '' }]],
      ['a symlink without target', [{ name: 'link', type: 'symlink', linkName: '' }]],
      ['a root that is not a directory', [{ name: './', type: 'symlink', linkName: 'x' }]],
      ['a negative uid', [{ name: 'f', data: 'x', pax: { uid: '-1' } }]]
    ]
    for (const [what, entries] of hostile) {
      const kinds: string[] = []
      const err = await buildEstargz(chunksOf(makeTar(entries), 4096), async (s) => { kinds.push(s.kind) }).then(() => undefined, (e: unknown) => e)
      expect(err, what).toBeInstanceOf(MalformedTocError)
      expect((err as MalformedTocError).code, what).toBe('ERR_MALFORMED_TOC')
      expect(kinds.filter(k => k === 'toc' || k === 'footer'), what).toEqual([])
      const out = join(dir, 'refused.esgz')
      await expect(buildEstargzFile(chunksOf(makeTar(entries), 4096), out), what).rejects.toThrow(MalformedTocError)
      expect(readdirSync(dir).filter(n => n.includes('refused')), what).toEqual([])
    }
    // an id no TOC can hold is a malformed tar already, as for Go's reader (it was an untyped TypeError)
    await expect(buildEstargz(chunksOf(makeTar([{ name: 'f', data: 'x', pax: { gid: '1.5' } }]), 4096), async () => {})).rejects.toThrow(MalformedTarError)
  })

  it('still builds what the reader accepts: symlinked directories used normally, hardlinks to earlier and later files', async () => {
    const entries: FixtureEntry[] = [
      { name: 'usr/', type: 'dir' },
      { name: 'usr/lib/', type: 'dir' },
      { name: 'usr/lib/libc.so', data: 'elf' },
      { name: 'lib', type: 'symlink', linkName: 'usr/lib' },
      { name: 'etc/early', type: 'hardlink', linkName: 'etc/later' },
      { name: 'etc/later', data: 'conf' },
      { name: 'etc/again', type: 'hardlink', linkName: 'usr/lib/libc.so' },
      { name: 'etc/chain', type: 'hardlink', linkName: 'etc/again' }
    ]
    const segs: BlobSegment[] = []
    await buildEstargz(chunksOf(makeTar(entries), 4096), async (s) => { segs.push(s) })
    const r = await readerFor(Buffer.concat(segs.map(s => s.bytes)))
    expect(Buffer.from(await r.readFile('lib/libc.so')).toString()).toBe('elf')
    expect(Buffer.from(await r.readFile('etc/early')).toString()).toBe('conf')
    expect(Buffer.from(await r.readFile('etc/chain')).toString()).toBe('elf')
    expect(r.lookup('usr/lib/libc.so')?.numLink).toBe(3)
  })
})
