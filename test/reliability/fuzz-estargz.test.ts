/**
 * Fuzzing the eStargz parsers: footers, TOC JSON, tar streams, gzip members and whole blobs,
 * from generated inputs and from mutations of real samples. Each never crashes or hangs, throws
 * only our typed errors, and — given the trusted TOC digest — never returns a wrong byte.
 */
import zlib from 'node:zlib'
import fc from 'fast-check'
import { beforeAll, describe, expect, it } from 'vitest'
import {
  EstargzReader, buildEstargz, decompressInput, encodeFooter, parseFooter, readTarStream
} from '../../src/estargz/index.js'
import { gunzipStream, inflateRange } from '../../src/estargz/gzip.js'
import { checkToc } from '../../src/estargz/reader.js'
import { fixtureBytes, makeTar, type FixtureEntry } from '../../scripts/fixtures/tar.js'
import { footer47, readTocJson, tocOffsetOf } from '../helpers/forge.js'
import { bytesLike, fuzzTarget, mutationOf, piecesOf, preview, record } from './harness.js'

const FILES: FixtureEntry[] = [
  { name: 'etc/', type: 'dir' },
  { name: 'etc/hostname', data: 'fuzz\n' },
  { name: 'usr/lib/big', data: fixtureBytes(7, 70_000) },
  { name: 'usr/lib/link', type: 'symlink', linkName: '../lib/big' },
  { name: 'usr/lib/hard', type: 'hardlink', linkName: 'usr/lib/big' },
  { name: 'a/' + 'long-name-'.repeat(15), data: 'long\n', xattrs: { 'user.k': 'v' } },
  { name: 'dev/null', type: 'char', devMajor: 1, devMinor: 3 },
  { name: 'run/fifo', type: 'fifo' }
]
const CONTENTS = new Map(FILES.filter(f => (f.type ?? 'file') === 'file').map(f => [f.name, Buffer.from(f.data ?? '')]))

let tar: Buffer
let blob: Buffer
let tocDigest: string
let tocJson: Buffer

beforeAll(async () => {
  tar = makeTar(FILES)
  const segs: Uint8Array[] = []
  const r = await buildEstargz((async function * () { yield tar })(), async (s) => { segs.push(s.bytes) }, { chunkSize: 16 << 10 })
  blob = Buffer.concat(segs)
  tocDigest = r.tocDigest
  tocJson = Buffer.from(JSON.stringify(readTocJson(blob), null, '\t'))
})

const open = async (b: Uint8Array, digest?: string): Promise<EstargzReader> =>
  await EstargzReader.open(async (off, len) => b.subarray(off, off + len), b.length, { tocDigest: digest })

async function drain (it: AsyncIterable<Uint8Array>, cap = 64 << 20): Promise<number> {
  let n = 0
  for await (const piece of it) {
    n += piece.length
    if (n > cap) throw new Error(`more than ${cap} bytes out of a small input`)
  }
  return n
}

describe('fuzz: eStargz', () => {
  it('footers (51 and 47 bytes): parsed or BadFooterError', async () => {
    const samples = [encodeFooter(12345), footer47(999), encodeFooter(2 ** 40)]
    await fuzzTarget('eStargz footer', bytesLike(samples, { maxRandom: 80 }), (b) => parseFooter(b), { reduced: 300, full: 20_000 })
  })

  it('TOC JSON, mutated as bytes: parsed and checked, or a typed error', async () => {
    await fuzzTarget('TOC JSON (mutated)', mutationOf(tocJson, { maxMutations: 6 }), (b) => checkToc(b, tocOffsetOf(blob)), { reduced: 300, full: 10_000 })
  })

  it('TOC JSON, generated entries (hostile names, links, types, numbers): a tree or a typed error', async () => {
    const name = fc.oneof(
      fc.constantFrom('', '.', '..', '/', '../etc', 'a/../../b', './a', 'a//b', 'a/', '/abs', 'a\0b', 'dir', 'dir/file', 'x'.repeat(5000)),
      fc.string({ maxLength: 20 }),
      fc.array(fc.constantFrom('a', 'b', '..', '.', ''), { maxLength: 6 }).map(p => p.join('/'))
    )
    const num = fc.oneof(fc.nat({ max: 100_000 }), fc.constantFrom(-1, 2 ** 53, 0.5, Number.MAX_SAFE_INTEGER, 1e300))
    const entry = fc.record({
      name,
      type: fc.constantFrom('dir', 'reg', 'symlink', 'hardlink', 'char', 'block', 'fifo', 'chunk', 'bogus'),
      size: fc.option(num, { nil: undefined }),
      linkName: fc.option(name, { nil: undefined }),
      offset: fc.option(num, { nil: undefined }),
      innerOffset: fc.option(num, { nil: undefined }),
      chunkOffset: fc.option(num, { nil: undefined }),
      chunkSize: fc.option(num, { nil: undefined }),
      mode: fc.option(num, { nil: undefined }),
      chunkDigest: fc.option(fc.constantFrom('sha256:' + '0'.repeat(64), 'sha256:xyz', 'md5:0'), { nil: undefined }),
      xattrs: fc.option(fc.dictionary(fc.string({ maxLength: 5 }), fc.constantFrom('AA==', '!!', '')), { nil: undefined })
    }, { requiredKeys: ['name', 'type'] })
    const doc = fc.record({ version: fc.constantFrom(1, 1, 1, 2, '1', null), entries: fc.array(entry, { maxLength: 30 }) })
    await fuzzTarget('TOC JSON (generated)', doc, (d) => checkToc(Buffer.from(JSON.stringify(d)), 1 << 20), { reduced: 300, full: 10_000 })
  })

  it('tar streams, in pieces of random sizes: entries or MalformedTarError, never a hang', async () => {
    const arb = fc.tuple(bytesLike([tar, makeTar([{ name: 'x', data: 'y' }], { eof: false })]), fc.array(fc.integer({ min: 1, max: 2000 }), { maxLength: 5 }))
    await fuzzTarget('tar stream', arb, async ([b, sizes]) => {
      for await (const entry of readTarStream(piecesOf(b, sizes))) {
        if (entry.header.size % 2 === 0) await drain(entry.data(997))
      }
    }, { reduced: 300, full: 10_000, show: ([b]: [Uint8Array, number[]]) => preview(b) })
  })

  it('gzip and zstd input (decompressInput): plain bytes out or MalformedGzipError', async () => {
    const gz = zlib.gzipSync(tar.subarray(0, 8192))
    const multi = Buffer.concat([zlib.gzipSync('one'), zlib.gzipSync('two')])
    await fuzzTarget('gzip/zstd layer input', fc.tuple(bytesLike([gz, multi]), fc.array(fc.integer({ min: 1, max: 3000 }), { maxLength: 4 })), async ([b, sizes]) => {
      const { stream } = await decompressInput(piecesOf(b, sizes))
      await drain(stream)
    }, { reduced: 300, full: 10_000, show: ([b]: [Uint8Array, number[]]) => preview(b) })
  })

  it('gzip members (chunk inflate and the bounded TOC gunzip): bytes or a typed error, the cap holds', async () => {
    const member = blob.subarray(0, Math.min(blob.length, tocOffsetOf(blob)))
    const toc = blob.subarray(tocOffsetOf(blob), blob.length - 51)
    const arb = fc.tuple(bytesLike([member.subarray(0, 20_000), toc]), fc.nat({ max: 100_000 }), fc.nat({ max: 100_000 }))
    await fuzzTarget('gzip member', arb, async ([b, skip, length]) => {
      const out = await inflateRange(b, skip, length)
      expect(out.length).toBeLessThanOrEqual(length)
      const cap = 50_000
      const n = await drain(gunzipStream(b, cap, () => new (class extends Error {})('cap')), cap + 1).catch((err: unknown) => {
        if ((err as Error).message === 'cap') return 0 // the cap fired: the error the caller chose
        throw err
      })
      expect(n).toBeLessThanOrEqual(cap)
    }, { reduced: 200, full: 5_000, show: ([b, s, l]: [Uint8Array, number, number]) => `${preview(b)} skip=${s} length=${l}` })
  })

  it('whole blobs, mutated: with the trusted TOC digest every byte read is right or the read fails typed', async () => {
    let bytesChecked = 0
    let wrong = 0
    await fuzzTarget('eStargz blob', fc.tuple(mutationOf(blob, { maxMutations: 3 }), fc.boolean()), async ([b, trusted]) => {
      const r = await open(b, trusted ? tocDigest : undefined)
      for (const [name, want] of CONTENTS) {
        let got: Uint8Array
        try {
          got = await r.readFile(name)
        } catch (err) {
          if (!trusted) throw err
          continue // a typed failure (checked by the harness) is fine; go on with the next file
        }
        if (trusted) {
          bytesChecked += got.length
          if (!Buffer.from(got).equals(want)) wrong++
        }
      }
      if (!trusted) await r.verify()
    }, { reduced: 150, full: 5_000, deadlineMs: 10_000, show: ([b, t]: [Uint8Array, boolean]) => `${preview(b)} trusted=${t}` })
    record({ kind: 'wrong-bytes', what: 'eStargz reader, mutated blobs with the trusted TOC digest', bytesChecked, wrong })
    expect(wrong).toBe(0)
  })
})
