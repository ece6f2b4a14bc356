import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import zlib from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  BadFooterError, ChunkDigestMismatchError, EstargzReader, LinkLoopError, MalformedGzipError, MalformedTarError,
  MalformedTocError, TocDigestMismatchError, TocTooLargeError, TruncatedBlobError, UnsafePathError,
  UnsupportedTarEntryError, buildEstargz, buildEstargzFile, EstargzError
} from '../../src/estargz/index.js'
import { footer51, forgeToc, readTocJson, tocOffsetOf } from '../helpers/forge.js'
import { fixtureBytes, makeTar } from '../../scripts/fixtures/tar.js'

const CHUNK = 16 * 1024
const open = async (blob: Buffer, tocDigest?: string): Promise<EstargzReader> =>
  await EstargzReader.open(async (off, len) => blob.subarray(off, off + len), blob.length, { tocDigest })

/** Runs `fn` and returns the error it throws, failing the test when it does not throw. */
async function errorOf (fn: () => Promise<unknown>): Promise<EstargzError> {
  try {
    await fn()
  } catch (err) {
    return err as EstargzError
  }
  throw new Error('expected an error')
}

describe('bad input', () => {
  let dir: string
  let blob: Buffer
  let tocDigest: string
  const files = { 'a/one': fixtureBytes(1, 50_000), 'a/two': fixtureBytes(2, 3000), 'b/three': Buffer.from('three\n') }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'esgz-bad-'))
    const segs: Uint8Array[] = []
    const tar = makeTar(Object.entries(files).map(([name, data]) => ({ name, data })))
    const r = await buildEstargz((async function * () { yield tar })(), async (s) => { segs.push(s.bytes) }, { chunkSize: CHUNK })
    blob = Buffer.concat(segs)
    tocDigest = r.tocDigest
  })
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  /** Reads every file; returns the error, and asserts that no wrong byte came out before it. */
  async function readAll (b: Buffer, digest?: string): Promise<EstargzError | undefined> {
    let r: EstargzReader
    try {
      r = await open(b, digest)
    } catch (err) {
      return err as EstargzError
    }
    for (const [name, data] of Object.entries(files)) {
      try {
        const got = Buffer.from(await r.readFile(name))
        expect(got.equals(data), `${name} must be right or fail`).toBe(true)
      } catch (err) {
        return err as EstargzError
      }
    }
    return undefined
  }

  it('truncation inside the footer, the TOC and the data', async () => {
    const tocOff = tocOffsetOf(blob)
    expect(await readAll(blob.subarray(0, blob.length - 10))).toBeInstanceOf(BadFooterError) // inside the footer
    expect(await readAll(blob.subarray(0, tocOff + 20))).toBeInstanceOf(BadFooterError) // inside the TOC: no footer
    expect(await readAll(blob.subarray(0, 1000))).toBeInstanceOf(BadFooterError) // inside the data
    // the footer kept but the TOC member cut short
    const cutToc = Buffer.concat([blob.subarray(0, tocOff + 30), footer51(tocOff)])
    expect(await readAll(cutToc)).toBeInstanceOf(TruncatedBlobError)
    // a source that ends early: the data range cannot be read
    const r = await EstargzReader.open(async (off, len) => blob.subarray(off, Math.min(off + len, 500)), blob.length).catch(e => e)
    expect(r).toBeInstanceOf(TruncatedBlobError)
    const short = await EstargzReader.open(async (off, len) => off < 5000 && off + len > 5000 ? blob.subarray(off, 5000) : blob.subarray(off, off + len), blob.length)
    const err = await errorOf(async () => await short.readFile('a/one'))
    expect(err).toBeInstanceOf(TruncatedBlobError)
    expect(err.code).toBe('ERR_TRUNCATED_BLOB')
  })

  it('flipped bytes in data, TOC and footer: typed errors, never wrong bytes', async () => {
    const tocOff = tocOffsetOf(blob)
    const positions = [20, 300, 2000, 20_000, 40_000, tocOff - 5, tocOff + 15, tocOff + 200, blob.length - 30, blob.length - 1]
    for (const pos of positions) {
      const bad = Buffer.from(blob)
      bad[pos] ^= 0x55
      const err = await readAll(bad, tocDigest)
      // flips in tar headers, padding or gzip trailers may be harmless for reads; then the bytes were right
      if (err != null) expect([BadFooterError, ChunkDigestMismatchError, MalformedGzipError, TruncatedBlobError, TocDigestMismatchError, MalformedTocError].some(c => err instanceof c), `flip at ${pos}: ${String(err)}`).toBe(true)
    }
    // a flip inside a data member's deflate stream is always caught
    const r = await open(blob)
    const chunk = r.lookup('a/one')?.chunks[1]
    const bad = Buffer.from(blob)
    bad[(chunk?.offset ?? 0) + 40] ^= 0xff
    const err = await readAll(bad, tocDigest)
    expect(err instanceof ChunkDigestMismatchError || err instanceof MalformedGzipError, String(err)).toBe(true)
  })

  it('a TOC whose offsets or sizes lie', async () => {
    // offset pointing at another file's member: the chunk digest does not match
    const swapped = forgeToc(blob, (toc) => {
      const two = toc.entries.find(e => e.name === 'a/two') as Record<string, unknown>
      const three = toc.entries.find(e => e.name === 'b/three') as Record<string, unknown>
      two.offset = three.offset
    })
    const err = await readAll(swapped.blob, swapped.tocDigest)
    expect(err instanceof ChunkDigestMismatchError || err instanceof TruncatedBlobError, String(err)).toBe(true)
    expect(err?.message).toMatch(/a\/two/)
    // offset past the TOC, size not covered by the chunks, a chunk bigger than the file
    const lies: Array<(e: Record<string, unknown>) => void> = [
      (e) => { e.offset = blob.length * 2 },
      (e) => { e.chunkSize = 999_999 },
      (e) => { e.size = 10_000_000; e.chunkSize = 3000 }
    ]
    for (const lie of lies) {
      const forged = forgeToc(blob, (toc) => { lie(toc.entries.find(e => e.name === 'a/two') as Record<string, unknown>) })
      const e = await errorOf(async () => await open(forged.blob, forged.tocDigest))
      expect(e).toBeInstanceOf(MalformedTocError)
    }
    // a size the single chunk is assumed to cover: caught when the chunk is read
    const bigger = forgeToc(blob, (toc) => { (toc.entries.find(e => e.name === 'a/two') as Record<string, unknown>).size = 10_000_000 })
    const readErr = await readAll(bigger.blob, bigger.tocDigest)
    expect(readErr instanceof TruncatedBlobError || readErr instanceof ChunkDigestMismatchError, String(readErr)).toBe(true)
    // a forged TOC is refused against the trusted digest
    expect(await errorOf(async () => await open(swapped.blob, tocDigest))).toBeInstanceOf(TocDigestMismatchError)
  })

  it('a TOC declaring a huge size, or larger than the caps', async () => {
    const tocOff = tocOffsetOf(blob)
    const json = JSON.stringify(readTocJson(blob))
    const header = makeTar([{ name: 'stargz.index.json', data: json }], { eof: false }).subarray(0, 512)
    header.write('77777777777\0', 124, 'latin1') // 8 GiB
    header.fill(0x20, 148, 156)
    let sum = 0
    for (const x of header) sum += x
    header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1')
    const member = zlib.gzipSync(Buffer.concat([header, Buffer.from(json), Buffer.alloc(1024)]))
    const huge = Buffer.concat([blob.subarray(0, tocOff), member, footer51(tocOff)])
    expect(await errorOf(async () => await open(huge))).toBeInstanceOf(TocTooLargeError)
    expect(await errorOf(async () => await EstargzReader.open(async (o, l) => blob.subarray(o, o + l), blob.length, { maxTocSize: 100 }))).toBeInstanceOf(TocTooLargeError)
    expect(await errorOf(async () => await EstargzReader.open(async (o, l) => blob.subarray(o, o + l), blob.length, { maxTocCompressedSize: 100 }))).toBeInstanceOf(TocTooLargeError)
    // a TOC member that is not gzip, or holds another file first
    const notGzip = Buffer.concat([blob.subarray(0, tocOff), Buffer.from('plain text, not gzip'), footer51(tocOff)])
    expect(await errorOf(async () => await open(notGzip))).toBeInstanceOf(MalformedGzipError)
    const other = zlib.gzipSync(makeTar([{ name: 'evil.json', data: '{}' }]))
    expect((await errorOf(async () => await open(Buffer.concat([blob.subarray(0, tocOff), other, footer51(tocOff)])))).message).toMatch(/evil\.json/)
    expect((await errorOf(async () => await open(Buffer.concat([blob.subarray(0, tocOff), zlib.gzipSync(makeTar([{ name: 'stargz.index.json', data: '[1,2' }])), footer51(tocOff)])))).code).toBe('ERR_MALFORMED_TOC')
  })

  it('unsafe names in the input tar or in a TOC, and symlink loops', async () => {
    for (const name of ['../x', '/abs', 'a/../../b']) {
      const out = join(dir, 'unsafe', 'o.esgz')
      const { mkdirSync } = await import('node:fs')
      mkdirSync(join(dir, 'unsafe'), { recursive: true })
      writeFileSync(join(dir, 'unsafe.tar'), makeTar([{ name: 'ok', data: 'fine' }, { name, data: 'evil' }]))
      const err = await errorOf(async () => await buildEstargzFile(join(dir, 'unsafe.tar'), out))
      expect(err).toBeInstanceOf(UnsafePathError)
      expect(err.message).toContain(JSON.stringify(name))
      expect(readdirSync(join(dir, 'unsafe'))).toEqual([]) // no half-written output
    }
    writeFileSync(join(dir, 'hl.tar'), makeTar([{ name: 'h', type: 'hardlink', linkName: '../../etc/passwd' }]))
    expect(await errorOf(async () => await buildEstargz(join(dir, 'hl.tar'), async () => {}))).toBeInstanceOf(UnsafePathError)
    for (const name of ['../x', 'a/../../b']) {
      const forged = forgeToc(blob, (toc) => { (toc.entries.find(e => e.name === 'b/three') as Record<string, unknown>).name = name })
      expect(await errorOf(async () => await open(forged.blob))).toBeInstanceOf(UnsafePathError)
    }
    const loops = forgeToc(blob, (toc) => {
      toc.entries.push({ name: 'l1', type: 'symlink', linkName: 'l2' }, { name: 'l2', type: 'symlink', linkName: '/l1' })
    })
    const r = await open(loops.blob)
    expect(await errorOf(async () => await r.readFile('l1'))).toBeInstanceOf(LinkLoopError)
    const hardLoop = forgeToc(blob, (toc) => {
      toc.entries.push({ name: 'h1', type: 'hardlink', linkName: 'h2' }, { name: 'h2', type: 'hardlink', linkName: 'h1' })
    })
    expect(await errorOf(async () => await open(hardLoop.blob))).toBeInstanceOf(MalformedTocError)
  })

  it('input that is not a tar, a corrupt or truncated tar, gzip garbage, unsupported entries', async () => {
    const cases: Array<[string, Buffer, new (...a: never[]) => Error]> = [
      ['text', Buffer.from('this is not a tar archive\n'.repeat(50)), MalformedTarError],
      ['truncated', makeTar([{ name: 'f', data: fixtureBytes(3, 5000) }]).subarray(0, 2000), MalformedTarError],
      ['bad checksum', (() => { const t = makeTar([{ name: 'a', data: 'x' }, { name: 'b', data: 'y' }]); t[1024 + 10] ^= 1; return t })(), MalformedTarError],
      ['gzip garbage', Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, 0]), Buffer.alloc(100, 7)]), MalformedGzipError],
      ['sparse', (() => { const t = makeTar([{ name: 's', data: 'x' }]); t[156] = 'S'.charCodeAt(0); t.fill(0x20, 148, 156); let s = 0; for (let i = 0; i < 512; i++) s += t[i]; t.write(s.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1'); return t })(), UnsupportedTarEntryError],
      ['pax sparse', makeTar([{ name: 's', data: 'x', pax: { 'GNU.sparse.major': '1' } }]), UnsupportedTarEntryError]
    ]
    const { mkdirSync } = await import('node:fs')
    mkdirSync(join(dir, 'bad'), { recursive: true })
    for (const [what, input, cls] of cases) {
      writeFileSync(join(dir, 'bad.in'), input)
      const err = await errorOf(async () => await buildEstargzFile(join(dir, 'bad.in'), join(dir, 'bad', 'out.esgz')))
      expect(err, what).toBeInstanceOf(cls)
      expect(err.code, what).toMatch(/^ERR_/)
      expect(readdirSync(join(dir, 'bad')), what).toEqual([])
    }
  })
})
