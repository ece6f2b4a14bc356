import { spawnSync } from 'node:child_process'
import { openSync, writeSync, closeSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MediaType } from '../../src/oci/media-types.js'
import { hasCommand, isRoot, needs } from '../helpers/env.js'
import { cliPath } from '../../scripts/fixtures/tools.js'
import { blob, jsonBlob, tagged, writeLayout } from '../../scripts/fixtures/oci-image.js'
import { makeTar } from '../../scripts/fixtures/tar.js'
import { sha256 } from '../../scripts/fixtures/digest.js'
import { sha256Bytes } from '../../scripts/fixtures/digest.js'

/** Incompressible bytes, the same for the same seed. */
function noise (seed: string, n: number): Buffer {
  const out = Buffer.alloc(n)
  for (let off = 0, i = 0; off < n; off += 32, i++) sha256Bytes(`${seed}:${i}`).copy(out, off)
  return out
}

/** An OCI layout of one image whose only layer holds `size` incompressible bytes. */
async function noiseImage (dir: string, seed: string, size: number): Promise<void> {
  const tar = makeTar([{ name: 'data/', type: 'dir' }, { name: 'data/noise.bin', data: noise(seed, size) }])
  const layer = blob(MediaType.OciLayerGzip, gzipSync(tar, { level: 1 }))
  const config = jsonBlob(MediaType.OciConfig, { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha256(tar)] } })
  const manifest = jsonBlob(MediaType.OciManifest, { schemaVersion: 2, mediaType: MediaType.OciManifest, config: config.descriptor, layers: [layer.descriptor] })
  await writeLayout(dir, [layer, config, manifest], [tagged(manifest.descriptor, 'latest')])
}

/** Every path under `dir`. */
async function walk (dir: string): Promise<string[]> {
  const out: string[] = []
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    out.push(p)
    if (e.isDirectory()) out.push(...await walk(p))
  }
  return out
}

describe.skipIf(needs({ root: isRoot, mount: hasCommand('mount') }))('a push that fills the disk', () => {
  let dir: string
  let fs: string
  let repo: string
  let tmp: string
  const cli = (args: string[]): { code: number, stdout: string, stderr: string } => {
    const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', env: { ...process.env, TMPDIR: tmp } })
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr }
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'no-space-'))
    fs = join(dir, 'fs')
    tmp = join(dir, 'tmp')
    await mkdir(fs)
    await mkdir(tmp)
    const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', fs], { encoding: 'utf8' })
    if (m.status !== 0) throw new Error(`mount: ${m.stderr}`)
    repo = join(fs, 'repo')
    await noiseImage(join(dir, 'small'), 'small', 100_000)
    await noiseImage(join(dir, 'big'), 'big', 8 << 20)
  })

  afterAll(async () => {
    if (fs != null) spawnSync('umount', ['-l', fs])
    if (dir != null) await rm(dir, { recursive: true, force: true })
  })

  it('fails with ERR_NO_SPACE naming the file, leaves no temp file, and the repo stays listable (even with the disk full)', async () => {
    const first = cli(['push', `oci:${join(dir, 'small')}`, '--repo', repo])
    expect(first.code, first.stderr).toBe(0)
    const root = first.stdout.trim()

    const big = cli(['push', `oci:${join(dir, 'big')}`, '--repo', repo])
    expect(big.code).toBe(1)
    const lines = big.stderr.trim().split('\n')
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(/\(ERR_NO_SPACE\)$/)
    expect(lines[0]).toContain(`no space left to write ${repo}/`)

    const left = await walk(fs)
    expect(left.filter(p => p.endsWith('.tmp') || p.includes('.tmp-'))).toEqual([])
    expect(await readdir(tmp)).toEqual([]) // the push's own temp dir is gone too

    const listed = (): string[] => {
      const ls = cli(['image', 'ls', '--repo', repo])
      expect(ls.code, ls.stderr).toBe(0)
      return ls.stdout.trim().split('\n').map(l => (JSON.parse(l) as { root: string }).root)
    }
    expect(listed()).toEqual([root])
    const inspect = cli(['image', 'inspect', root, '--offline', '--repo', repo])
    expect(inspect.code, inspect.stderr).toBe(0)
    expect((JSON.parse(inspect.stdout) as { root: string }).root).toBe(root)

    // The blocks stored before the error stay (a GC's job): fill what is left, to the last byte.
    const fd = openSync(join(fs, 'filler'), 'w')
    try {
      for (;;) writeSync(fd, Buffer.alloc(4096))
    } catch (err) {
      expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC')
    } finally {
      closeSync(fd)
    }
    expect(listed()).toEqual([root])
    expect(cli(['image', 'inspect', root, '--offline', '--repo', repo]).code).toBe(0)

    // Given room (the filesystem grown, the filler gone), the same repo takes the big push.
    await rm(join(fs, 'filler'))
    const grow = spawnSync('mount', ['-o', 'remount,size=64m', fs], { encoding: 'utf8' })
    expect(grow.status, grow.stderr).toBe(0)
    const again = cli(['push', `oci:${join(dir, 'big')}`, '--repo', repo])
    expect(again.code, again.stderr).toBe(0)
    expect(listed().sort()).toEqual([root, again.stdout.trim()].sort())
    const pulled = cli(['image', 'inspect', again.stdout.trim(), '--offline', '--repo', repo])
    expect(pulled.code, pulled.stderr).toBe(0)
  })
})
