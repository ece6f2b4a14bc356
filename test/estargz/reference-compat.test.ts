import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import zlib from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildEstargzFile, EstargzReader } from '../../src/estargz/index.js'
import { FileSource } from '../../src/source/file.js'
import { SMALL_CHUNK, writeFixtureTars, type FixtureTar } from '../helpers/fixtures.js'
import { esgzRef } from '../../scripts/fixtures/tools.js'
import { diffTrees, walkTree } from '../helpers/tree.js'
import { hasCommand, isRoot, needs } from '../helpers/env.js'

const skip = needs({ go: hasCommand('go'), tar: hasCommand('tar'), getfattr: hasCommand('getfattr') })

/** Our layer check: these tests use the reference Go library as the judge. */
describe.skipIf(skip)('eStargz compatibility with containerd/stargz-snapshotter (esgz-ref)', () => {
  let dir: string
  let ref: string
  let fixtures: FixtureTar[]
  const ours = (name: string, chunk: number): string => join(dir, `${name.replace(/\W/g, '_')}-${chunk}.ours.esgz`)
  const theirs = (name: string, chunk: number): string => join(dir, `${name.replace(/\W/g, '_')}-${chunk}.ref.esgz`)
  const refJson = (args: string[]): { tocDigest: string, diffID: string } => JSON.parse(execFileSync(ref, args, { encoding: 'utf8', env: { ...process.env, GOMAXPROCS: '1' } }))
  const rawToc = (blob: string): string => execFileSync(ref, ['toc', blob, '--raw'], { encoding: 'utf8', maxBuffer: 1 << 26 })

  beforeAll(() => {
    ref = esgzRef()
    dir = mkdtempSync(join(tmpdir(), 'esgz-compat-'))
    fixtures = writeFixtureTars(join(dir, 'fixtures'))
  })
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  for (const chunk of [4 << 20, SMALL_CHUNK]) {
    describe(`chunk size ${chunk}`, () => {
      it('blobs we build pass esgz-ref verify, and esgz-ref cat returns every file byte-identical', async () => {
        for (const f of fixtures) {
          const r = await buildEstargzFile(f.path, ours(f.name, chunk), { chunkSize: chunk })
          execFileSync(ref, ['verify', ours(f.name, chunk), r.tocDigest])
          expect(f.files.size).toBeGreaterThan(2)
          for (const [name, content] of f.files) {
            const got = execFileSync(ref, ['cat', ours(f.name, chunk), name], { maxBuffer: 1 << 26 })
            expect(Buffer.compare(got, content), `${f.name}: ${name}`).toBe(0)
          }
        }
      })

      it('our TOC is what the reference writes for the same tar, offsets aside', async () => {
        for (const f of fixtures) {
          const r = await buildEstargzFile(f.path, ours(f.name, chunk), { chunkSize: chunk })
          const theirsResult = refJson(['build', f.path, theirs(f.name, chunk), '--chunk-size', String(chunk)])
          const strip = (toc: string): string => toc.split('\n').filter(l => !/^\t+"offset": /.test(l)).join('\n')
          expect(strip(rawToc(ours(f.name, chunk)))).toBe(strip(rawToc(theirs(f.name, chunk))))
          // offsets differ in value but not in where they appear
          const offsets = (toc: string): string[] => toc.split('\n').map(l => /^\t+"offset": /.test(l) ? 'offset' : l).filter(l => l === 'offset' || l.includes('"name"'))
          expect(offsets(rawToc(ours(f.name, chunk)))).toEqual(offsets(rawToc(theirs(f.name, chunk))))
          expect(r.tocDigest).toMatch(/^sha256:[0-9a-f]{64}$/)
          expect(theirsResult.tocDigest).toMatch(/^sha256:/)
        }
      })

      it('blobs the reference builds are read byte-identical by our reader and pass our verify', async () => {
        for (const f of fixtures) {
          const { tocDigest } = refJson(['build', f.path, theirs(f.name, chunk), '--chunk-size', String(chunk)])
          const src = await FileSource.open(theirs(f.name, chunk))
          try {
            const reader = await EstargzReader.open(src.read.bind(src), await src.size(), { tocDigest })
            const report = await reader.verify(tocDigest)
            expect(report.regularFiles).toBeGreaterThan(2)
            for (const [name, content] of f.files) {
              expect(Buffer.compare(await reader.readFile(name), content), `${f.name}: ${name}`).toBe(0)
              // a range across the first chunk boundary
              if (content.length > chunk) {
                const got = await reader.readFile(name, chunk - 100, 300)
                expect(Buffer.compare(Buffer.from(got), content.subarray(chunk - 100, chunk + 200))).toBe(0)
              }
            }
          } finally {
            await src.close()
          }
          execFileSync(process.execPath, [join(import.meta.dirname, '../../bin/ipfs-estargz.js'), 'layer', 'verify', theirs(f.name, chunk), '--toc-digest', tocDigest])
        }
      })
    })
  }

  it('reads reference blobs with prioritized files, and orders prioritized files as the reference does', async () => {
    const f = fixtures[0]
    const prioritized = ['h/link-to-big', 'a/xattr.txt', 'w/.wh.gone']
    const { tocDigest } = refJson(['build', f.path, join(dir, 'prio.ref.esgz'), '--prioritized', prioritized.join(',')])
    const r = await buildEstargzFile(f.path, join(dir, 'prio.ours.esgz'), { prioritizedFiles: prioritized })
    const strip = (toc: string): string => toc.split('\n').filter(l => !/^\t+"offset": /.test(l)).join('\n')
    expect(strip(rawToc(join(dir, 'prio.ours.esgz')))).toBe(strip(rawToc(join(dir, 'prio.ref.esgz'))))
    execFileSync(ref, ['verify', join(dir, 'prio.ours.esgz'), r.tocDigest])
    const src = await FileSource.open(join(dir, 'prio.ref.esgz'))
    try {
      const reader = await EstargzReader.open(src.read.bind(src), await src.size(), { tocDigest })
      expect(reader.tree.prefetchOffset).toBeGreaterThan(0)
      expect(Buffer.from(await reader.readFile('a/big.bin')).equals(f.files.get('a/big.bin') as Buffer)).toBe(true)
    } finally {
      await src.close()
    }
  })

  it('prioritizes a file whose parent directories the tar omits (the reference refuses it)', async () => {
    const out = join(dir, 'orphan.esgz')
    const r = await buildEstargzFile(fixtures[0].path, out, { prioritizedFiles: ['orphan/deep/file.txt', 'a/owned'] })
    execFileSync(ref, ['verify', out, r.tocDigest])
    const names = execFileSync(ref, ['ls', out], { encoding: 'utf8' }).trim().split('\n').map(l => (JSON.parse(l) as { name: string }).name)
    expect(names.slice(0, 4)).toEqual(['orphan/deep/file.txt', 'a/', 'a/owned', '.prefetch.landmark'])
  })

  it.skipIf(!isRoot())('tar -xzf of our blob extracts the same tree as the source tar', async () => {
    for (const f of fixtures) {
      const a = join(dir, `x-src-${f.name.replace(/\W/g, '_')}`)
      const b = join(dir, `x-ours-${f.name.replace(/\W/g, '_')}`)
      const blob = ours(f.name, SMALL_CHUNK)
      await buildEstargzFile(f.path, blob, { chunkSize: SMALL_CHUNK })
      const flags = ['--xattrs', '--xattrs-include=*', '--numeric-owner', '--same-owner', '-p']
      execFileSync('mkdir', ['-p', a, b])
      execFileSync('tar', ['-C', a, ...flags, '-xf', f.path])
      execFileSync('tar', ['-C', b, ...flags, '-xzf', blob])
      const diffs = diffTrees(await walkTree(a), await walkTree(b), { skip: ['stargz.index.json', '.no.prefetch.landmark'], ignore: ['mtime'] })
      expect(diffs, f.name).toEqual([])
      // Directory mtimes change as entries are extracted into them; file mtimes must match.
      const ta = await walkTree(a, { xattrs: false })
      const tb = await walkTree(b, { xattrs: false })
      for (const [p, info] of ta) if (info.type !== 'dir') expect(tb.get(p)?.mtime, p).toBe(info.mtime)
    }
  })

  it('puts only file payload in data members: one chunk per member, identical bytes for identical files', async () => {
    const f = fixtures[0]
    const blob = readFileSync(ours(f.name, SMALL_CHUNK))
    const src = await FileSource.open(ours(f.name, SMALL_CHUNK))
    const reader = await EstargzReader.open(src.read.bind(src), await src.size())
    await src.close()
    const members = new Map<string, Buffer>()
    for (const node of reader.nodes()) {
      if (node.type !== 'reg') continue
      const content = f.files.get(node.name) ?? f.files.get(`./${node.name}`) as Buffer
      for (const c of node.chunks) {
        expect(blob.subarray(c.offset, c.offset + 3)).toEqual(Buffer.from([0x1f, 0x8b, 0x08]))
        const { buffer, engine } = zlib.inflateRawSync(blob.subarray(c.offset + 10), { info: true }) as unknown as { buffer: Buffer, engine: { bytesWritten: number } }
        expect(buffer.equals(content.subarray(c.chunkOffset, c.chunkOffset + c.chunkSize)), node.name).toBe(true)
        const end = c.offset + 10 + engine.bytesWritten + 8
        expect(blob.subarray(end, end + 2), 'a new member follows').toEqual(Buffer.from([0x1f, 0x8b]))
        members.set(`${c.digest}`, blob.subarray(c.offset, end))
      }
    }
    // the same content in another layer, with other neighbours and headers, compresses identically
    const other = join(dir, 'other.tar')
    const { makeTar, fixtureBytes } = await import('../../scripts/fixtures/tar.js')
    writeFileSync(other, makeTar([{ name: 'elsewhere/', type: 'dir' }, { name: 'elsewhere/copy.bin', data: fixtureBytes(4, 5 * SMALL_CHUNK + 12345), mtime: 1234567890, uid: 5 }, { name: 'zzz', data: 'x' }]))
    await buildEstargzFile(other, join(dir, 'other.esgz'), { chunkSize: SMALL_CHUNK })
    const src2 = await FileSource.open(join(dir, 'other.esgz'))
    const r2 = await EstargzReader.open(src2.read.bind(src2), await src2.size())
    await src2.close()
    const blob2 = readFileSync(join(dir, 'other.esgz'))
    const copy = r2.lookup('elsewhere/copy.bin')
    expect(copy?.chunks.length).toBe(6)
    for (const c of copy?.chunks ?? []) {
      const mine = members.get(c.digest) ?? Buffer.alloc(0)
      expect(mine.length, 'chunk present in the first layer').toBeGreaterThan(0)
      expect(blob2.subarray(c.offset, c.offset + mine.length).equals(mine)).toBe(true)
    }
  })
})
