import { spawn } from 'node:child_process'
import { mkdir, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildEstargzFile } from '../../src/estargz/index.js'
import { LayerFs } from '../../src/fs/layer.js'
import { MountManager } from '../../src/fs/mounts.js'
import { fuseMountsUnder } from '../../src/fs/mountinfo.js'
import { silentLogger } from '../../src/logging.js'
import { FileSource } from '../../src/source/file.js'
import { hasCommand, hasFuse, isRoot, needs } from '../helpers/env.js'
import { makeTar, type FixtureEntry } from '../../scripts/fixtures/tar.js'
import { diffTrees } from '../helpers/tree.js'
import { extractTar, removeDir, run, tempDir, walk } from './helpers.js'
import type { PathInfo } from '../helpers/tree.js'

const logger = silentLogger()

/** Three layers: lower, middle (whiteouts, opaque dir), upper (re-adds, deletes a dir). */
const layers: FixtureEntry[][] = [
  [
    { name: 'a/', type: 'dir' }, { name: 'a/1', data: 'one' }, { name: 'a/2', data: 'two' },
    { name: 'opq/', type: 'dir' }, { name: 'opq/x', data: 'x' }, { name: 'opq/sub/y', data: 'y' },
    { name: 'keep/', type: 'dir' }, { name: 'keep/file', data: 'kept?' }, { name: 'del.txt', data: 'bye' },
    { name: 'link', type: 'symlink', linkName: 'a/1' }
  ],
  [
    { name: '.wh.del.txt', data: '', mode: 0 },
    { name: 'opq/', type: 'dir' }, { name: 'opq/.wh..wh..opq', data: '', mode: 0 }, { name: 'opq/new', data: 'new' },
    { name: 'a/', type: 'dir' }, { name: 'a/.wh.1', data: '', mode: 0 }, { name: 'a/3', data: 'three' }
  ],
  [
    { name: 'a/', type: 'dir' }, { name: 'a/1', data: 'one again' }, { name: 'a/2', data: 'two, changed' },
    { name: '.wh.keep', data: '', mode: 0 }
  ]
]

/** The layers extracted in order with whiteouts applied, as a path model. */
function applyLayers (trees: Array<Map<string, PathInfo>>): Map<string, PathInfo> {
  const merged = new Map<string, PathInfo>()
  const base = (p: string): string => p.slice(p.lastIndexOf('/') + 1)
  const parent = (p: string): string => p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : ''
  const removeUnder = (prefix: string, self: boolean): void => {
    for (const k of [...merged.keys()]) if ((self && k === prefix) || k.startsWith(prefix === '' ? '' : prefix + '/')) merged.delete(k)
  }
  for (const t of trees) {
    for (const p of t.keys()) {
      const b = base(p)
      if (b === '.wh..wh..opq') removeUnder(parent(p), false)
      else if (b.startsWith('.wh.')) removeUnder(parent(p) === '' ? b.slice(4) : `${parent(p)}/${b.slice(4)}`, true)
    }
    for (const [p, info] of t) if (!base(p).startsWith('.wh.') && p !== '') merged.set(p, info)
  }
  return merged
}

describe.skipIf(needs({ root: isRoot, fuse: hasFuse, fusermount: hasCommand('fusermount') }))('MountManager', () => {
  let dir: string
  const sources: FileSource[] = []
  const overlays: string[] = []
  let manager: MountManager | undefined

  beforeAll(async () => {
    dir = await tempDir('mounts')
  })

  afterAll(async () => {
    for (const o of overlays) await run('umount', [o]).catch(async () => await run('umount', ['-l', o]).catch(() => {}))
    await manager?.stop()
    for (const s of sources) await s.close()
    await removeDir(dir)
  })

  it('mounts three layers that a kernel overlay merges into the layers applied in order', async () => {
    manager = new MountManager({ logger }, { root: join(dir, 'layers') })
    await manager.start()
    const trees: Array<Map<string, PathInfo>> = []
    const mnts: string[] = []
    for (const [i, entries] of layers.entries()) {
      const tar = join(dir, `l${i}.tar`)
      await writeFile(tar, makeTar(entries))
      const { tocDigest } = await buildEstargzFile(tar, join(dir, `l${i}.esgz`))
      const source = await FileSource.open(join(dir, `l${i}.esgz`))
      sources.push(source)
      const fs = await LayerFs.open({ source, logger }, { tocDigest, backgroundFetch: false })
      const mnt = join(dir, 'layers', String(i))
      await manager.mount(mnt, fs)
      mnts.push(mnt)
      const x = join(dir, `x${i}`)
      await mkdir(x)
      await extractTar(tar, x)
      trees.push(await walk(x))
    }
    expect(manager.list().length).toBe(3)
    const merged = join(dir, 'merged')
    await mkdir(merged)
    await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${[...mnts].reverse().join(':')}`, merged])
    overlays.push(merged)
    const actual = await walk(merged)
    actual.delete('')
    const expected = applyLayers(trees)
    // Directories merged from several layers take the upper layer's attributes; compare the rest.
    expect(diffTrees(actual, expected, { ignore: ['mtime', 'xattrs'] })).toEqual([])
    expect(actual.has('del.txt')).toBe(false)
    expect(actual.has('keep')).toBe(false)
    expect((await readdir(join(merged, 'opq'))).sort()).toEqual(['new'])
    expect((await readdir(join(merged, 'a'))).sort()).toEqual(['1', '2', '3'])
    await run('umount', [merged])
    overlays.pop()
    await manager.stop()
    expect(manager.list()).toEqual([])
    expect(await fuseMountsUnder(join(dir, 'layers'))).toEqual([])
  })

  it('mountLayer owns its source: closed when the mount fails (nothing left mounted) and at unmount', async () => {
    const m = new MountManager({ logger }, { root: join(dir, 'owned') })
    await m.start()
    const tar = join(dir, 'owned.tar')
    await writeFile(tar, makeTar(layers[0]))
    const { tocDigest } = await buildEstargzFile(tar, join(dir, 'owned.esgz'))
    const closing = async (): Promise<{ source: FileSource, closed: () => boolean }> => {
      const source = await FileSource.open(join(dir, 'owned.esgz'))
      let closed = false
      const close = source.close.bind(source)
      source.close = async () => { closed = true; await close() }
      return { source, closed: () => closed }
    }
    const mnt = join(dir, 'owned', 'l')
    const bad = await closing()
    await expect(m.mountLayer(mnt, { source: bad.source, logger }, { tocDigest: 'sha256:' + '0'.repeat(64) })).rejects.toThrow()
    expect(bad.closed()).toBe(true)
    expect(await fuseMountsUnder(join(dir, 'owned'))).toEqual([])
    const good = await closing()
    await m.mountLayer(mnt, { source: good.source, logger }, { tocDigest, backgroundFetch: false })
    expect((await readdir(join(mnt, 'a'))).sort()).toEqual(['1', '2'])
    expect(good.closed()).toBe(false)
    await m.unmount(mnt)
    expect(good.closed()).toBe(true)
    expect(await fuseMountsUnder(join(dir, 'owned'))).toEqual([])
    await m.stop()
  })

  it('clears a stale mount left by a killed process at start, and mounts over it again', async () => {
    const tar = join(dir, 'stale.tar')
    await writeFile(tar, makeTar([{ name: 'f', data: 'fresh' }]))
    const blob = join(dir, 'stale.esgz')
    const { tocDigest } = await buildEstargzFile(tar, blob)
    const root = join(dir, 'stale-root')
    const mnt = join(root, 'm')
    const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'mount-child.ts'), blob, tocDigest, mnt], { stdio: ['ignore', 'pipe', 'inherit'] })
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => { if (d.toString().includes('mounted')) resolve() })
      child.on('exit', code => reject(new Error(`child exited ${code}`)))
    })
    child.kill('SIGKILL')
    await new Promise(resolve => child.once('exit', resolve))
    expect((await fuseMountsUnder(root)).map(m => m.mountpoint)).toEqual([mnt])
    await expect(readdir(mnt)).rejects.toMatchObject({ code: 'ENOTCONN' })

    const m2 = new MountManager({ logger }, { root })
    manager = m2
    await m2.start()
    expect(await fuseMountsUnder(root)).toEqual([])
    const source = await FileSource.open(blob)
    sources.push(source)
    await m2.mount(mnt, await LayerFs.open({ source, logger }, { tocDigest, backgroundFetch: false }))
    expect(await readdir(mnt)).toEqual(['f'])
    await m2.stop()
    expect(await fuseMountsUnder(root)).toEqual([])
  })
})
