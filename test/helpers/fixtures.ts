import { execFileSync } from 'node:child_process'
import { lstatSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fixtureBytes, makeTar, type FixtureEntry } from '../../scripts/fixtures/tar.js'
import { esgzRef } from '../../scripts/fixtures/tools.js'

export const SMALL_CHUNK = 64 * 1024

/**
 * The edge-case layer: chunk boundaries at 64 KiB (a file of exactly one chunk, of exactly two,
 * one byte over), empty files, a hardlink to a chunked file, binary xattrs, long, unicode and
 * HTML-escaped names, whiteouts, entries whose parent directories are missing, devices, a fifo,
 * setuid bits, large and named owners, the epoch and fractional mtimes.
 */
export function edgeEntries (): FixtureEntry[] {
  const long = 'l/' + 'very-long-directory-name-'.repeat(5) + '/' + 'f'.repeat(40) + '.txt'
  return [
    { name: 'a/', type: 'dir', mode: 0o755, uname: 'root', gname: 'root' },
    { name: 'a/empty', data: '' },
    { name: 'a/exact.bin', data: fixtureBytes(1, SMALL_CHUNK), mode: 0o600 },
    { name: 'a/double.bin', data: fixtureBytes(2, 2 * SMALL_CHUNK) },
    { name: 'a/plus1.bin', data: fixtureBytes(3, SMALL_CHUNK + 1), mode: 0o4755 },
    { name: 'a/big.bin', data: fixtureBytes(4, 5 * SMALL_CHUNK + 12345) },
    { name: 'a/<html> & "quotes".txt', data: 'escaped\n' },
    { name: 'a/xattr.txt', data: 'xattrs\n', xattrs: { 'user.test': 'hello', 'user.binary': Buffer.from([1, 0, 0xff, 2, 0, 0x20, 0x80, 0]) } },
    { name: 'a/owned', data: '#!/bin/sh\n', uid: 1000, gid: 1001, uname: 'user', gname: 'group', mode: 0o2755 },
    { name: 'a/bigid', data: 'x', uid: 3_000_000, gid: 7 },
    { name: 'a/epoch', data: 'old', mtime: 0 },
    { name: 'a/fraction', data: 'frac', pax: { mtime: '1700000000.75' } },
    { name: 'ü/日本語 space.txt', data: 'unicode\n' },
    { name: long, data: 'long name\n' },
    { name: 'h/', type: 'dir' },
    { name: 'h/link-to-big', type: 'hardlink', linkName: 'a/big.bin' },
    { name: 'h/link-to-small', type: 'hardlink', linkName: 'a/owned' },
    { name: 'h/sym', type: 'symlink', linkName: '../a/exact.bin' },
    { name: 'h/dangling', type: 'symlink', linkName: '/no/such/target' },
    { name: 'w/', type: 'dir' },
    { name: 'w/.wh.gone', data: '', mode: 0 },
    { name: 'o/', type: 'dir' },
    { name: 'o/.wh..wh..opq', data: '', mode: 0 },
    { name: 'o/kept', data: 'kept\n' },
    { name: 'orphan/deep/file.txt', data: 'parents omitted, as umoci writes\n' },
    { name: 'dev/', type: 'dir' },
    { name: 'dev/null', type: 'char', mode: 0o666, devMajor: 1, devMinor: 3 },
    { name: 'dev/loop0', type: 'block', mode: 0o660, devMajor: 7, devMinor: 0 },
    { name: 'dev/fifo', type: 'fifo', mode: 0o644 },
    { name: 'z/last', data: fixtureBytes(5, 1) }
  ]
}

/** Contents of the regular files of a fixture by clean name (hardlinks resolved). */
export function fileContents (entries: FixtureEntry[]): Map<string, Buffer> {
  const out = new Map<string, Buffer>()
  for (const e of entries) {
    if ((e.type ?? 'file') === 'file') out.set(e.name, Buffer.from(e.data ?? ''))
  }
  for (const e of entries) {
    if (e.type === 'hardlink') out.set(e.name, out.get(e.linkName ?? '') ?? Buffer.alloc(0))
  }
  return out
}

export interface FixtureTar { name: string, path: string, files: Map<string, Buffer> }

/** Writes the fixture tars into `dir`: the edge layer, the reference's own fixture, a GNU tar. */
export function writeFixtureTars (dir: string): FixtureTar[] {
  mkdirSync(dir, { recursive: true })
  const edge = edgeEntries()
  const edgePath = join(dir, 'edge.tar')
  writeFileSync(edgePath, makeTar(edge))

  const refPath = join(dir, 'ref.tar')
  execFileSync(esgzRef(), ['mktesttar', refPath])
  const refX = join(dir, 'ref-x')
  mkdirSync(refX)
  execFileSync('tar', ['-C', refX, '-xf', refPath, '--exclude=e/null', '--exclude=e/fifo'])
  const refFiles = new Map<string, Buffer>()
  for (const name of execFileSync('tar', ['-tf', refPath], { encoding: 'utf8' }).split('\n')) {
    if (name === '' || name === 'e/null' || name === 'e/fifo') continue // not extracted above
    const abs = join(refX, name)
    if (lstatSync(abs).isFile()) refFiles.set(name, readFileSync(abs))
  }

  // A GNU-format tar of a real directory: GNU long-name headers and a ./ prefix.
  const g = join(dir, 'gnu-src')
  const longName = 'n'.repeat(120)
  mkdirSync(join(g, 'dir/sub'), { recursive: true })
  writeFileSync(join(g, 'dir/f'), fixtureBytes(6, 3000))
  writeFileSync(join(g, longName), 'long\n')
  writeFileSync(join(g, 'dir/rand'), fixtureBytes(7, 300_000))
  const gnuPath = join(dir, 'gnu.tar')
  execFileSync('tar', ['-C', g, '--format=gnu', '--sort=name', '--numeric-owner', '-cf', gnuPath, '.'])
  const gnuFiles = new Map<string, Buffer>([
    ['./dir/f', fixtureBytes(6, 3000)], [`./${longName}`, Buffer.from('long\n')], ['./dir/rand', fixtureBytes(7, 300_000)]
  ])
  return [
    { name: 'edge', path: edgePath, files: fileContents(edge) },
    { name: 'reference fixture', path: refPath, files: refFiles },
    { name: 'gnu', path: gnuPath, files: gnuFiles }
  ]
}
