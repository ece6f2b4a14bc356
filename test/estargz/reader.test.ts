import { describe, expect, it } from 'vitest'
import {
  EntryNotFoundError, EstargzReader, LinkLoopError, NotARegularFileError, buildEstargz, type RangeRead
} from '../../src/estargz/index.js'
import { handmadeBlob } from '../helpers/forge.js'
import { sha256 } from '../../scripts/fixtures/digest.js'
import { fixtureBytes, makeTar, type FixtureEntry } from '../../scripts/fixtures/tar.js'

const readOf = (blob: Buffer): RangeRead => async (off, len) => blob.subarray(off, off + len)

async function build (entries: FixtureEntry[], chunkSize?: number): Promise<Buffer> {
  const segs: Uint8Array[] = []
  await buildEstargz((async function * () { yield makeTar(entries) })(), async (s) => { segs.push(s.bytes) }, { chunkSize })
  return Buffer.concat(segs)
}

describe('eStargz reader', () => {
  it('reads legacy stargz blobs (47-byte footer, whole-file digest only)', async () => {
    const a = fixtureBytes(1, 5000)
    const b = Buffer.from('second file')
    const { blob } = handmadeBlob([[{ name: 'a', data: a }], [{ name: 'b', data: b }]], { legacyFooter: true, noChunkDigest: true })
    const r = await EstargzReader.open(readOf(blob), blob.length)
    expect(r.footerSize).toBe(47)
    expect(Buffer.from(await r.readFile('a')).equals(a)).toBe(true)
    expect(Buffer.from(await r.readFile('b', 7)).toString()).toBe('file')
  })

  it('opens from a TOC member hint without reading the blob, and reads the footer when the hint does not hold', async () => {
    const entries: FixtureEntry[] = Array.from({ length: 50 }, (_, i) => ({ name: `d/file-${i}`, data: fixtureBytes(i + 1, 3000) }))
    const blob = await build(entries)
    const plain = await EstargzReader.open(readOf(blob), blob.length)
    const member = blob.subarray(plain.tocOffset, blob.length - 51)
    const open = async (hint: { offset: number, bytes: Uint8Array }, tocDigest: string | null = plain.tocDigest): Promise<{ r: EstargzReader, blobReads: number, refused: Error[] }> => {
      let blobReads = 0
      const refused: Error[] = []
      const r = await EstargzReader.open(async (off, len) => { blobReads++; return blob.subarray(off, off + len) }, blob.length, {
        ...(tocDigest !== null ? { tocDigest } : {}),
        tocMember: { offset: hint.offset, read: async (length) => hint.bytes.subarray(0, length) },
        onHintRefused: (err) => { refused.push(err) }
      })
      return { r, blobReads, refused }
    }
    const good = await open({ offset: plain.tocOffset, bytes: member })
    expect(good.blobReads).toBe(0)
    expect(good.refused).toEqual([])
    expect(good.r.tocOffset).toBe(plain.tocOffset)
    expect(good.r.tocDigest).toBe(plain.tocDigest)
    expect(good.r.nodes().map(n => [n.name, n.chunks])).toEqual(plain.nodes().map(n => [n.name, n.chunks]))
    expect(Buffer.from(await good.r.readFile('d/file-9')).equals(fixtureBytes(10, 3000))).toBe(true)
    // hints that do not hold: the footer is read and the layer opens all the same
    const other = await build(entries.slice(1))
    const otherReader = await EstargzReader.open(readOf(other), other.length)
    const otherMember = other.subarray(otherReader.tocOffset, other.length - 51)
    for (const [why, hint] of [
      ['an offset off by one', { offset: plain.tocOffset + 1, bytes: member }],
      ['an offset off by one the other way', { offset: plain.tocOffset - 1, bytes: member }],
      ['a member cut short', { offset: plain.tocOffset, bytes: member.subarray(0, member.length - 1) }],
      ['another layer\'s TOC of the right length', { offset: blob.length - 51 - otherMember.length, bytes: otherMember }],
      ['an offset past the footer', { offset: blob.length, bytes: member }]
    ] as const) {
      const bad = await open(hint)
      expect(bad.refused, why).toHaveLength(1)
      expect(bad.blobReads, why).toBe(2)
      expect(bad.r.tocDigest).toBe(plain.tocDigest)
      expect(Buffer.from(await bad.r.readFile('d/file-9')).equals(fixtureBytes(10, 3000))).toBe(true)
    }
    // without a trusted TOC digest the hint is not used at all
    const untrusted = await open({ offset: plain.tocOffset, bytes: member }, null)
    expect(untrusted.blobReads).toBe(2)
    expect(untrusted.refused).toEqual([])
  })

  it('opens with one read when the TOC fits in tailBytes, two when it does not, the same layer either way', async () => {
    const entries: FixtureEntry[] = Array.from({ length: 200 }, (_, i) => ({ name: `d/file-${i}`, data: fixtureBytes(i + 1, 3000) }))
    const blob = await build(entries)
    const logged = (): { read: RangeRead, reads: Array<[number, number]> } => {
      const reads: Array<[number, number]> = []
      return { read: async (off, len) => { reads.push([off, len]); return blob.subarray(off, off + len) }, reads }
    }
    const plain = logged()
    const footerFirst = await EstargzReader.open(plain.read, blob.length)
    expect(plain.reads).toHaveLength(2)
    expect(plain.reads[0]).toEqual([blob.length - 51, 51])
    const tocBytes = blob.length - footerFirst.tocOffset
    for (const [tailBytes, reads] of [[tocBytes, 1], [blob.length * 2, 1], [tocBytes - 100, 2], [10, 2]] as const) {
      const l = logged()
      const r = await EstargzReader.open(l.read, blob.length, { tailBytes, tocDigest: footerFirst.tocDigest })
      expect(l.reads, `tailBytes ${tailBytes}`).toHaveLength(reads)
      // never a byte read twice, never more than the blob
      expect(l.reads.reduce((n, [, len]) => n + len, 0)).toBe(Math.max(tocBytes, Math.min(Math.max(tailBytes, 51), blob.length)))
      expect(r.tocDigest).toBe(footerFirst.tocDigest)
      expect(Buffer.from(await r.readFile('d/file-7')).equals(fixtureBytes(8, 3000))).toBe(true)
    }
    // a tail that ends inside a truncated blob fails as a truncated footer read does
    await expect(EstargzReader.open(async (off, len) => blob.subarray(off, Math.min(off + len, blob.length - 1)), blob.length, { tailBytes: 4096 })).rejects.toThrow(/truncated/)
  })

  it('honours innerOffset (several files in one gzip member) and ignores NumLink', async () => {
    const files = [{ name: 'x/one', data: Buffer.from('first payload') }, { name: 'x/two', data: fixtureBytes(2, 70000) }, { name: 'x/three', data: Buffer.from('3') }]
    const { blob, tocDigest } = handmadeBlob([files, [{ name: 'y', data: Buffer.from('own member') }]], { extraKeys: { NumLink: 0 } })
    const r = await EstargzReader.open(readOf(blob), blob.length, { tocDigest })
    for (const f of files) expect(Buffer.from(await r.readFile(f.name)).equals(f.data), f.name).toBe(true)
    expect(Buffer.from(await r.readFile('x/two', 69990, 100)).equals(files[1].data.subarray(69990))).toBe(true)
    expect((await r.verify(tocDigest)).regularFiles).toBe(4)
    // implicit directory for x/, mode 0755
    expect(r.lookup('x')?.type).toBe('dir')
    expect(r.lookup('x')?.implicit).toBe(true)
    expect(r.lookup('x')?.mode).toBe(0o755)
  })

  it('builds the tree: normalised names, implicit dirs, hardlinks as one node, link counts, owners back-filled', async () => {
    const blob = await build([
      { name: './a/', type: 'dir', mode: 0o700, uid: 5, uname: 'five' },
      { name: './a/f', data: 'data', uid: 5, uname: 'five' },
      { name: 'a/g', data: 'other', uid: 5, uname: 'five' },
      { name: 'b/c/d', data: 'deep' },
      { name: 'h1', type: 'hardlink', linkName: 'a/f' },
      { name: 'h2', type: 'hardlink', linkName: './h1' },
      { name: 'l', type: 'symlink', linkName: 'a/f' },
      { name: 'dev', type: 'char', devMajor: 1, devMinor: 5 }
    ])
    const r = await EstargzReader.open(readOf(blob), blob.length)
    const f = r.lookup('/a/f')
    expect(f).toBe(r.lookup('h1'))
    expect(f).toBe(r.lookup('h2'))
    expect(f?.numLink).toBe(3)
    expect(r.lookup('a')?.mode).toBe(0o700)
    expect(r.lookup('a/g')?.userName).toBe('five') // omitted in the TOC after the first, back-filled
    expect(r.lookup('b')?.numLink).toBe(3) // 2 + subdir c
    expect(r.root.numLink).toBe(4) // 2 + a, b
    expect([...(r.root.children?.keys() ?? [])].sort()).toEqual(['a', 'b', 'dev', 'h1', 'h2', 'l'])
    expect(r.lookup('dev')).toMatchObject({ type: 'char', devMajor: 1, devMinor: 5 })
    expect(r.lookup('.no.prefetch.landmark')).toBeUndefined()
    expect(r.tree.noPrefetch).toBe(true)
    expect(Buffer.from(await r.readFile('l')).toString()).toBe('data')
  })

  it('resolves symlinks inside the layer and reports loops and missing paths', async () => {
    const blob = await build([
      { name: 'd/', type: 'dir' },
      { name: 'd/file', data: 'target' },
      { name: 'abs', type: 'symlink', linkName: '/d/file' },
      { name: 'rel', type: 'symlink', linkName: 'd/../d/file' },
      { name: 'dirlink', type: 'symlink', linkName: 'd' },
      { name: 'loop1', type: 'symlink', linkName: 'loop2' },
      { name: 'loop2', type: 'symlink', linkName: 'loop1' },
      { name: 'up', type: 'symlink', linkName: '../../../d/file' }
    ])
    const r = await EstargzReader.open(readOf(blob), blob.length)
    for (const p of ['abs', 'rel', 'dirlink/file', 'up', '/d/./file']) expect(Buffer.from(await r.readFile(p)).toString(), p).toBe('target')
    expect(() => r.resolve('loop1')).toThrow(LinkLoopError)
    expect(() => r.resolve('d/missing')).toThrow(EntryNotFoundError)
    await expect(r.readFile('d')).rejects.toThrow(NotARegularFileError)
  })

  it('reads any range of a chunked file, verifying only the chunks it needs', async () => {
    const data = fixtureBytes(3, 300_000)
    const blob = await build([{ name: 'big', data }], 10_000)
    let reads = 0
    const r = await EstargzReader.open(async (off, len) => { reads++; return blob.subarray(off, off + len) }, blob.length)
    expect(reads).toBe(2) // footer, then TOC
    reads = 0
    for (const [off, len] of [[0, 1], [9_999, 2], [123_456, 50_000], [299_999, 10], [300_000, 5], [0, 300_000]]) {
      expect(Buffer.from(await r.readFile('big', off, len)).equals(data.subarray(off, off + len)), `${off}+${len}`).toBe(true)
    }
    expect(reads).toBe(1 + 2 + 6 + 1 + 0 + 30)
    expect(sha256(await r.readFile('big'))).toBe(r.lookup('big')?.digest)
  })
})
