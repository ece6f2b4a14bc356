import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { promisify } from 'node:util'
import { buildEstargzFile } from '../../src/estargz/index.js'
import { makeTar } from '../../scripts/fixtures/tar.js'
import type { PathInfo } from '../helpers/tree.js'
import type { RangeSource } from '../../src/source/types.js'

export const run = promisify(execFile)

/**
 * Helpers for the filesystem tests. Everything here is asynchronous on purpose: a synchronous
 * fs call or child process on a FUSE mount served by this same process blocks the event loop
 * the FUSE callbacks need, and hangs (npm-stack pitfall 9).
 */

export async function tempDir (prefix: string): Promise<string> {
  return await mkdtemp(join(tmpdir(), `ipfs-estargz-${prefix}-`))
}

export async function removeDir (dir: string | undefined): Promise<void> {
  if (dir != null) await rm(dir, { recursive: true, force: true })
}

/** A layer of one small file, `etc/hello.txt` ("hello\n"), built into `dir/l.esgz`. */
export async function helloLayer (dir: string): Promise<{ blob: string, tocDigest: string }> {
  await writeFile(join(dir, 'l.tar'), makeTar([{ name: 'etc/hello.txt', data: 'hello\n' }]))
  const blob = join(dir, 'l.esgz')
  return { blob, tocDigest: (await buildEstargzFile(join(dir, 'l.tar'), blob)).tocDigest }
}

/** Counts every byte and call that reaches the source. */
export class CountingSource implements RangeSource {
  bytes = 0
  calls = 0
  readonly ranges: Array<[number, number]> = []
  constructor (private readonly inner: RangeSource) {}
  async size (): Promise<number> { return await this.inner.size() }
  async read (offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    const b = await this.inner.read(offset, length, signal)
    this.bytes += b.length
    this.calls++
    this.ranges.push([offset, b.length])
    return b
  }

  reset (): void {
    this.bytes = 0
    this.calls = 0
    this.ranges.length = 0
  }
}

/** Flips bytes of the blob in [from, to) — after the TOC has been read, when `armed`. */
export class CorruptingSource implements RangeSource {
  armed = false
  constructor (private readonly inner: RangeSource, private readonly from: number, private readonly to: number) {}
  async size (): Promise<number> { return await this.inner.size() }
  async read (offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    const b = Buffer.from(await this.inner.read(offset, length, signal))
    if (!this.armed) return b
    for (let i = Math.max(this.from, offset); i < Math.min(this.to, offset + b.length); i++) b[i - offset] ^= 0x5a
    return b
  }
}

/**
 * Never answers reads that touch [from, to) while `armed` (and ignores the abort signal, like
 * a stuck peer), or every read once `dead` is set.
 */
export class HangingSource implements RangeSource {
  armed = false
  dead = false
  hung = 0
  constructor (private readonly inner: RangeSource, private readonly from = 0, private readonly to = Infinity) {}
  async size (): Promise<number> { return await this.inner.size() }
  async read (offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    if (this.dead) throw new Error('source is gone')
    if (this.armed && offset < this.to && offset + length > this.from) {
      this.hung++
      return await new Promise<never>(() => {})
    }
    return await this.inner.read(offset, length, signal)
  }
}

/** The shared tree-walk (async: safe on a mount served by this process). */
export { walkTree as walk, xattrsUnder } from '../helpers/tree.js'

/** Extracts a tar as root would for a container (owners, modes, xattrs, devices). */
export async function extractTar (tarPath: string, dir: string): Promise<void> {
  await run('tar', ['-xpf', tarPath, '--numeric-owner', '--xattrs', '--xattrs-include=*', '-C', dir])
}

/** Directories the tar implies (by paths) but does not list: extraction invents their attributes. */
export async function impliedDirs (tarPath: string): Promise<Set<string>> {
  const names = (await run('tar', ['-tf', tarPath], { maxBuffer: 1 << 26 })).stdout.split('\n').filter(n => n !== '')
  const clean = (n: string): string => n.replace(/^\.\//, '').replace(/\/+$/, '')
  const listed = new Set(names.map(clean))
  const implied = new Set<string>()
  for (const n of listed) {
    for (let d = dirname(n); d !== '.' && d !== '' && d !== '/'; d = dirname(d)) if (!listed.has(d)) implied.add(d)
  }
  return implied
}

export const OPAQUE = 'trusted.overlay.opaque'

/**
 * What the mount must show for an extracted layer: `.wh..wh..opq` gone and its directory
 * carrying trusted.overlay.opaque=y; `.wh.NAME` gone and NAME a char device 0:0 (mode 0,
 * root-owned, the whiteout's mtime) unless NAME exists.
 */
export function overlayForm (tree: Map<string, PathInfo>): Map<string, PathInfo> {
  const out = new Map<string, PathInfo>()
  const base = (p: string): string => p.slice(p.lastIndexOf('/') + 1)
  const parent = (p: string): string => p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : ''
  for (const [p, info] of tree) if (!base(p).startsWith('.wh.')) out.set(p, { ...info, xattrs: { ...info.xattrs } })
  for (const [p, info] of tree) {
    const b = base(p)
    if (!b.startsWith('.wh.')) continue
    const dir = parent(p)
    if (b === '.wh..wh..opq') {
      const d = out.get(dir)
      if (d != null) d.xattrs[OPAQUE] = '0x79'
      continue
    }
    const target = dir === '' ? b.slice(4) : `${dir}/${b.slice(4)}`
    if (!out.has(target)) out.set(target, { type: 'char', mode: 0, uid: 0, gid: 0, mtime: info.mtime, rdev: 0, xattrs: {}, ino: 0, nlink: 1 })
  }
  return out
}
