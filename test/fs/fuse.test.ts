import { open, readFile, writeFile, mkdir, unlink, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildEstargzFile } from '../../src/estargz/index.js'
import { FuseMount } from '../../src/fs/fuse.js'
import { LayerFs, type LayerFsOptions } from '../../src/fs/layer.js'
import { fuseMountsUnder } from '../../src/fs/mountinfo.js'
import { silentLogger } from '../../src/logging.js'
import { FileSource } from '../../src/source/file.js'
import { hasCommand, hasFuse, isRoot, needs } from '../helpers/env.js'
import { SMALL_CHUNK, writeFixtureTars, type FixtureTar } from '../helpers/fixtures.js'
import { esgzRef } from '../../scripts/fixtures/tools.js'
import { diffTrees, hardlinkGroups } from '../helpers/tree.js'
import { makeTar } from '../../scripts/fixtures/tar.js'
import { CorruptingSource, CountingSource, HangingSource, extractTar, impliedDirs, overlayForm, removeDir, run, tempDir, walk } from './helpers.js'
import type { RangeSource } from '../../src/source/types.js'

const logger = silentLogger()

interface Built { blob: string, tocDigest: string }

async function buildOurs (tar: string, out: string, chunkSize?: number): Promise<Built> {
  const r = await buildEstargzFile(tar, out, { chunkSize })
  return { blob: out, tocDigest: r.tocDigest }
}

async function buildRef (tar: string, out: string): Promise<Built> {
  const { stdout } = await run(esgzRef(), ['build', tar, out])
  return { blob: out, tocDigest: (JSON.parse(stdout) as { tocDigest: string }).tocDigest }
}

describe.skipIf(needs({ root: isRoot, fuse: hasFuse, fusermount: hasCommand('fusermount') }))('FUSE mount of a layer', () => {
  let dir: string
  let tars: FixtureTar[]
  const live: Array<{ mount: FuseMount, fs: LayerFs, source: RangeSource }> = []

  const mountBlob = async (built: Built, name: string, options: LayerFsOptions = {}, wrap?: (s: RangeSource) => RangeSource): Promise<{ mnt: string, fs: LayerFs, mount: FuseMount, source: RangeSource }> => {
    const file = await FileSource.open(built.blob)
    const source = wrap != null ? wrap(file) : file
    const fs = await LayerFs.open({ source, logger }, { tocDigest: built.tocDigest, backgroundFetch: false, ...options })
    await fs.start()
    const mnt = join(dir, 'mnt', name)
    const mount = new FuseMount({ fs, logger }, mnt)
    await mount.mount()
    live.push({ mount, fs, source: file })
    return { mnt, fs, mount, source }
  }

  beforeAll(async () => {
    dir = await tempDir('fuse')
    tars = writeFixtureTars(join(dir, 'tars'))
  })

  afterAll(async () => {
    for (const { mount, fs, source } of live) {
      await mount.unmount().catch(() => {})
      await fs.stop().catch(() => {})
      await source.close?.()
    }
    await removeDir(dir)
  })

  const builders: Array<[string, (tar: string, out: string) => Promise<Built>]> = [
    ['our writer (4 MiB chunks)', async (t, o) => await buildOurs(t, o)],
    ['our writer (64 KiB chunks)', async (t, o) => await buildOurs(t, o, SMALL_CHUNK)],
    ['the reference writer', buildRef]
  ]

  for (const fixture of ['edge', 'reference fixture', 'gnu']) {
    for (const [by, build] of builders) {
      it(`mounted ${fixture} layer built by ${by} equals tar -x of the same tar (whiteouts in overlayfs form)`, async () => {
        const tar = tars.find(t => t.name === fixture)?.path as string
        const slug = `${fixture}-${by}`.replace(/[^a-z0-9]+/gi, '-')
        const built = await build(tar, join(dir, `${slug}.esgz`))
        const { mnt } = await mountBlob(built, slug)
        const x = join(dir, `x-${slug}`)
        await mkdir(x)
        await extractTar(tar, x)
        const expected = overlayForm(await walk(x))
        for (const d of await impliedDirs(tar)) {
          const e = expected.get(d)
          if (e != null) e.mtime = 0 // tar -x invents the time of a directory the tar does not list
        }
        const actual = await walk(mnt)
        // The TOC keeps whole seconds (writers round); tar -x keeps the fraction.
        const frac = expected.get('a/fraction')
        if (frac != null && fixture === 'edge') frac.mtime = actual.get('a/fraction')?.mtime ?? -1
        expect(diffTrees(actual, expected, { skip: [''] })).toEqual([])
        expect(hardlinkGroups(actual)).toEqual(hardlinkGroups(expected))
        if (fixture !== 'gnu') expect(hardlinkGroups(actual).length).toBeGreaterThan(0)
        for (const [p, info] of actual) if (info.type !== 'dir') expect(info.nlink, p).toBe(expected.get(p)?.nlink)
        // Files read with cat (another process) give the same bytes as the walk (fs.promises).
        const someFile = [...expected].find(([, i]) => i.type === 'file' && (i.size ?? 0) > 100_000)
        if (someFile != null) {
          const { stdout } = await run('sh', ['-c', `cat "$1" | sha256sum`, 'sh', join(mnt, someFile[0])])
          expect(stdout.split(' ')[0]).toBe(someFile[1].sha256)
        }
      })
    }
  }

  it('is read-only (EROFS) and maps errors to errno (ENOENT, ENOTDIR, ENODATA)', async () => {
    const tar = tars.find(t => t.name === 'edge')?.path as string
    const { mnt } = await mountBlob(await buildOurs(tar, join(dir, 'ro.esgz')), 'ro')
    await expect(writeFile(join(mnt, 'a/new'), 'x')).rejects.toMatchObject({ code: 'EROFS' })
    await expect(writeFile(join(mnt, 'a/owned'), 'x')).rejects.toMatchObject({ code: 'EROFS' })
    await expect(mkdir(join(mnt, 'newdir'))).rejects.toMatchObject({ code: 'EROFS' })
    await expect(unlink(join(mnt, 'a/owned'))).rejects.toMatchObject({ code: 'EROFS' })
    await expect(readFile(join(mnt, 'a/missing'))).rejects.toMatchObject({ code: 'ENOENT' })
    await expect(readdir(join(mnt, 'a/owned'))).rejects.toMatchObject({ code: 'ENOTDIR' })
    await expect(readFile(join(mnt, 'a'))).rejects.toMatchObject({ code: 'EISDIR' })
    const err = await run('getfattr', ['-n', 'user.nothing', join(mnt, 'a/xattr.txt')]).catch((e: { stderr: string }) => e)
    expect((err as { stderr: string }).stderr).toMatch(/No such attribute/)
    const ok = await run('getfattr', ['--only-values', '-n', 'user.test', join(mnt, 'a/xattr.txt')])
    expect(ok.stdout).toBe('hello')
  })

  it('a layer without any xattr still answers "no such attribute" (ENODATA), never "not supported"', async () => {
    // containerd's walking differ (continuity's compareCapabilities, committing a container)
    // reads security.capability of every unchanged file and fails on any error but ENODATA
    const tar = join(dir, 'no-xattrs.tar')
    await writeFile(tar, makeTar([{ name: 'bin/', type: 'dir' }, { name: 'bin/tool', data: 'x', mode: 0o755 }]))
    const { mnt } = await mountBlob(await buildOurs(tar, join(dir, 'no-xattrs.esgz')), 'no-xattrs')
    for (let i = 0; i < 2; i++) {
      const err = await run('getfattr', ['-n', 'security.capability', join(mnt, 'bin/tool')]).then(() => undefined, (e: { stderr: string }) => e)
      expect(err?.stderr).toMatch(/No such attribute/)
    }
  })

  it('is lazy: reading one small file fetches a small fraction of the layer', async () => {
    const tar = tars.find(t => t.name === 'reference fixture')?.path as string
    const built = await buildOurs(tar, join(dir, 'lazy.esgz'), SMALL_CHUNK)
    let counting: CountingSource | undefined
    const { mnt } = await mountBlob(built, 'lazy', { prefetchTimeoutMs: 0 }, s => (counting = new CountingSource(s)))
    const c = counting as CountingSource
    const size = (await run('stat', ['-c', '%s', built.blob])).stdout.trim()
    const layerBytes = Number(size)
    expect(layerBytes).toBeGreaterThan(4 << 20)
    const afterMount = c.bytes // footer + TOC
    const { stdout } = await run('cat', [join(mnt, 'a/small.txt')])
    expect(stdout).toBe('hello estargz\n')
    const forTheFile = c.bytes - afterMount
    expect(forTheFile).toBeGreaterThan(0)
    expect(forTheFile / layerBytes).toBeLessThan(0.01)
    expect(c.bytes / layerBytes).toBeLessThan(0.05)
  })

  it('a corrupted chunk fails the read with EIO, never returns a wrong byte, and is counted', async () => {
    const tar = tars.find(t => t.name === 'edge')?.path as string
    const built = await buildOurs(tar, join(dir, 'corrupt.esgz'), SMALL_CHUNK)
    const expectedBytes = tars.find(t => t.name === 'edge')?.files.get('a/big.bin') as Buffer
    // Find the third chunk of a/big.bin in the blob and corrupt its compressed bytes.
    const probeSource = await FileSource.open(built.blob)
    const probe = await LayerFs.open({ source: probeSource, logger }, { tocDigest: built.tocDigest })
    const chunk = probe.estargz.lookup('a/big.bin')?.chunks[2]
    await probeSource.close()
    expect(chunk).toMatchObject({ chunkOffset: 2 * SMALL_CHUNK, chunkSize: SMALL_CHUNK })
    const c = chunk as NonNullable<typeof chunk>
    let corrupting: CorruptingSource | undefined
    const { mnt, fs } = await mountBlob(built, 'corrupt', {}, s => (corrupting = new CorruptingSource(s, c.offset + 12, c.offset + 40)))
    ;(corrupting as CorruptingSource).armed = true
    const viaCat = await run('cat', [join(mnt, 'a/big.bin')], { encoding: 'buffer', maxBuffer: 1 << 24 }).then(() => undefined, (e: { stderr: Buffer, stdout: Buffer }) => e)
    expect(viaCat?.stderr.toString()).toMatch(/Input\/output error/)
    // What cat got before the error is a correct prefix, shorter than the file.
    expect(viaCat?.stdout.equals(expectedBytes.subarray(0, viaCat.stdout.length))).toBe(true)
    expect(viaCat?.stdout.length).toBeLessThan(c.chunkOffset + 1)
    const fh = await open(join(mnt, 'a/big.bin'), 'r')
    let failures = 0
    try {
      for (let off = 0; off < expectedBytes.length; off += 16384) {
        const buf = Buffer.alloc(16384)
        try {
          const { bytesRead } = await fh.read(buf, 0, buf.length, off)
          expect(buf.subarray(0, bytesRead).equals(expectedBytes.subarray(off, off + bytesRead)), `bytes at ${off}`).toBe(true)
        } catch (err) {
          expect((err as NodeJS.ErrnoException).code).toBe('EIO')
          failures++
        }
      }
    } finally {
      await fh.close()
    }
    expect(failures).toBeGreaterThan(0)
    expect(fs.stats().verificationFailures).toBeGreaterThan(0)
    // Other files stay readable.
    expect(await readFile(join(mnt, 'a/owned'), 'utf8')).toBe('#!/bin/sh\n')
  })

  it('a hanging source fails the read after the fetch timeout while other files stay readable', async () => {
    const tar = tars.find(t => t.name === 'edge')?.path as string
    const built = await buildOurs(tar, join(dir, 'hang.esgz'), SMALL_CHUNK)
    const probeSource = await FileSource.open(built.blob)
    const probe = await LayerFs.open({ source: probeSource, logger }, { tocDigest: built.tocDigest })
    const big = probe.estargz.lookup('a/big.bin')
    await probeSource.close()
    const from = big?.chunks[0].offset ?? 0
    const to = big?.chunks[big.chunks.length - 1].compressedEnd ?? 0
    let hanging: HangingSource | undefined
    const { mnt, fs } = await mountBlob(built, 'hang', { fetchTimeoutMs: 1500 }, s => (hanging = new HangingSource(s, from, to)))
    const h = hanging as HangingSource
    const cached = await readFile(join(mnt, 'a/double.bin'))
    h.armed = true
    const slow = readFile(join(mnt, 'a/big.bin'))
    // While the read hangs, other (cached and uncached) files read fine.
    expect((await readFile(join(mnt, 'a/double.bin'))).equals(cached)).toBe(true)
    expect(await readFile(join(mnt, 'a/xattr.txt'), 'utf8')).toBe('xattrs\n')
    await expect(slow).rejects.toMatchObject({ code: 'ETIMEDOUT' })
    expect(h.hung).toBeGreaterThan(0)
    expect(fs.stats().fetchTimeouts).toBeGreaterThan(0)
    // The source recovers: the same file reads correctly.
    h.armed = false
    const expectedBytes = tars.find(t => t.name === 'edge')?.files.get('a/big.bin') as Buffer
    expect((await readFile(join(mnt, 'a/big.bin'))).equals(expectedBytes)).toBe(true)
  })

  it('mounts and unmounts a mountpoint whose name holds shell syntax, running none of it', async () => {
    const tar = tars.find(t => t.name === 'edge')?.path as string
    const marker = join(dir, 'injected')
    const name = `$(touch ${marker})\`touch ${marker}\`"; touch ${marker}; "`
    const { mnt, mount } = await mountBlob(await buildOurs(tar, join(dir, 'shell.esgz')), name)
    expect((await readdir(join(mnt, 'a'))).length).toBeGreaterThan(0)
    await mount.unmount()
    expect(mount.mounted).toBe(false)
    expect((await fuseMountsUnder(mnt)).length).toBe(0)
    await expect(readFile(marker)).rejects.toMatchObject({ code: 'ENOENT' })
  })

  it('unmounts without hanging while a file is still open', async () => {
    const tar = tars.find(t => t.name === 'edge')?.path as string
    const { mnt, mount } = await mountBlob(await buildOurs(tar, join(dir, 'open.esgz')), 'open')
    // Another process holds a file and a directory open (this process must not: its own
    // close would wait on FUSE callbacks that need its event loop). Not a child of ours: its
    // death ends the FUSE session, and a SIGCHLD then can land on a FUSE worker thread that
    // libfuse cancels as the session ends, which can take libuv's signal lock with it (seen
    // once: this process's event loop blocked for good, its children never reaped).
    const { stdout } = await run('sh', ['-c', '(cd "$1" && exec sleep 600 < "$1/big.bin") >/dev/null 2>&1 & echo $!', 'sh', join(mnt, 'a')])
    const holder = Number(stdout.trim())
    try {
      await waitFor(async () => (await readdir(`/proc/${holder}/fd`).catch(() => [])).length >= 3)
      await mount.unmount()
      expect(mount.mounted).toBe(false)
      expect((await fuseMountsUnder(mnt)).length).toBe(0)
    } finally {
      try { process.kill(holder, 'SIGKILL') } catch { /* gone already */ }
    }
  })
})

async function waitFor (cond: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms
  while (!await cond()) {
    if (Date.now() > end) throw new Error('condition not met in time')
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}
