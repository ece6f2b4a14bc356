import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { edgeEntries, fileContents } from '../helpers/fixtures.js'
import { makeTar } from '../../scripts/fixtures/tar.js'
import { cliPath } from '../../scripts/fixtures/tools.js'

function cli (args: string[], input?: Buffer): { code: number, stdout: Buffer, stderr: string } {
  const r = spawnSync(process.execPath, [cliPath, ...args], { input, maxBuffer: 1 << 28 })
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr.toString() }
}

describe('ipfs-estargz layer', () => {
  let dir: string
  let built: { tocDigest: string, diffID: string, size: number, uncompressedSize: number }
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'cli-layer-'))
    writeFileSync(join(dir, 'in.tar'), makeTar(edgeEntries()))
  })
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it('build prints exactly {tocDigest, diffID, size, uncompressedSize}', () => {
    const r = cli(['layer', 'build', join(dir, 'in.tar'), join(dir, 'out.esgz'), '--chunk-size', '65536', '--level', '6'])
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
    const lines = r.stdout.toString().trim().split('\n')
    expect(lines).toHaveLength(1)
    built = JSON.parse(lines[0])
    expect(Object.keys(built)).toEqual(['tocDigest', 'diffID', 'size', 'uncompressedSize'])
    expect(built.size).toBe(readFileSync(join(dir, 'out.esgz')).length)
  })

  it('build reads stdin and a prioritized-files list', () => {
    writeFileSync(join(dir, 'prio'), '# first the owner\na/owned\n\nz/last\n')
    const r = cli(['layer', 'build', '-', join(dir, 'stdin.esgz'), '--prioritized-files', join(dir, 'prio')], readFileSync(join(dir, 'in.tar')))
    expect(r.code, r.stderr).toBe(0)
    const names = cli(['layer', 'ls', join(dir, 'stdin.esgz')]).stdout.toString().trim().split('\n').map(l => (JSON.parse(l) as { name: string }).name)
    expect(names.slice(0, 4)).toEqual(['a/', 'a/owned', 'z/last', '.prefetch.landmark']) // the tar has no z/ entry
  })

  it('verify exits 0 only when the TOC and every chunk verify', () => {
    expect(cli(['layer', 'verify', join(dir, 'out.esgz'), '--toc-digest', built.tocDigest]).code).toBe(0)
    const wrong = cli(['layer', 'verify', join(dir, 'out.esgz'), '--toc-digest', 'sha256:' + '0'.repeat(64)])
    expect(wrong.code).toBe(1)
    expect(wrong.stderr).toMatch(/^ipfs-estargz: TOC digest mismatch.*\(ERR_TOC_DIGEST_MISMATCH\)\n$/)
    const blob = readFileSync(join(dir, 'out.esgz'))
    const bad = Buffer.from(blob)
    bad[2000] ^= 0xff
    writeFileSync(join(dir, 'bad.esgz'), bad)
    const r = cli(['layer', 'verify', join(dir, 'bad.esgz'), '--toc-digest', built.tocDigest])
    expect(r.code).toBe(1)
    expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(1)
    expect(cli(['layer', 'verify', join(dir, 'out.esgz')]).code).toBe(2) // --toc-digest is required
  })

  it('ls prints one JSON line per TOC entry, cat prints verified bytes', () => {
    const lines = cli(['layer', 'ls', join(dir, 'out.esgz')]).stdout.toString().trim().split('\n')
    const entries = lines.map(l => JSON.parse(l) as { name: string, type: string })
    expect(entries[0].name).toBe('.no.prefetch.landmark')
    expect(entries.filter(e => e.type === 'chunk').length).toBeGreaterThan(3)
    for (const [name, content] of fileContents(edgeEntries())) {
      const r = cli(['layer', 'cat', join(dir, 'out.esgz'), name])
      expect(r.code, `${name}: ${r.stderr}`).toBe(0)
      expect(r.stdout.equals(content), name).toBe(true)
    }
    const big = fileContents(edgeEntries()).get('a/big.bin') as Buffer
    const part = cli(['layer', 'cat', join(dir, 'out.esgz'), 'h/link-to-big', '--offset', '65000', '--length', '1000'])
    expect(part.stdout.equals(big.subarray(65000, 66000))).toBe(true)
    expect(cli(['layer', 'cat', join(dir, 'out.esgz'), 'h/sym']).stdout.equals(fileContents(edgeEntries()).get('a/exact.bin') as Buffer)).toBe(true)
  })

  it('fails with one line and a non-zero code on bad input, leaving no output', () => {
    writeFileSync(join(dir, 'junk'), 'not a tar at all'.repeat(100))
    const r = cli(['layer', 'build', join(dir, 'junk'), join(dir, 'junk.esgz')])
    expect(r.code).toBe(1)
    expect(r.stderr).toBe('ipfs-estargz: input is not a tar archive (bad header checksum at offset 0) (ERR_MALFORMED_TAR)\n')
    expect(readdirSync(dir).filter(f => f.includes('junk.esgz'))).toEqual([])
    expect(cli(['layer', 'cat', join(dir, 'out.esgz'), 'no/such']).stderr).toMatch(/no such file in layer: "no\/such" \(ERR_ENTRY_NOT_FOUND\)/)
    expect(cli(['layer', 'cat', join(dir, 'out.esgz'), 'a']).code).toBe(1)
    expect(cli(['layer', 'build', join(dir, 'in.tar'), join(dir, 'x'), '--level', 'high']).code).toBe(2)
    expect(cli(['layer', 'ls', join(dir, 'missing.esgz')]).stderr).toMatch(/ENOENT/)
  })

  it('build refuses a layer that would not mount (path through a symlink, hardlink to nothing), leaving no output', () => {
    const hostile = {
      'symlink-dir': makeTar([{ name: 'dir/', type: 'dir' }, { name: 'victim', type: 'symlink', linkName: '/dir' }, { name: 'victim/file', data: 'x' }]),
      'dangling-hardlink': makeTar([{ name: 'link', type: 'hardlink', linkName: 'not/in/layer' }])
    }
    for (const [name, tar] of Object.entries(hostile)) {
      writeFileSync(join(dir, `${name}.tar`), tar)
      const r = cli(['layer', 'build', join(dir, `${name}.tar`), join(dir, `${name}.esgz`)])
      expect(r.code, name).toBe(1)
      expect(r.stderr, name).toMatch(/^ipfs-estargz: malformed TOC: .*\(ERR_MALFORMED_TOC\)\n$/)
      expect(readdirSync(dir).filter(f => f.includes(`${name}.esgz`)), name).toEqual([])
      // the same from stdin, gzip-compressed
      const z = cli(['layer', 'build', '-', join(dir, `${name}.esgz`)], gzipSync(tar))
      expect(z.code, name).toBe(1)
      expect(z.stderr, name).toContain('(ERR_MALFORMED_TOC)')
    }
  })

  it('every command has --help', () => {
    for (const args of [[], ['layer'], ['layer', 'build'], ['layer', 'verify'], ['layer', 'ls'], ['layer', 'cat']]) {
      const r = cli([...args, '--help'])
      expect(r.code, args.join(' ')).toBe(0)
      expect(r.stdout.toString()).toMatch(/^Usage: ipfs-estargz/)
    }
  })
})
