import { chownSync, existsSync, linkSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { isRoot, needs } from '../helpers/env.js'
import { diskUsage, OverlayLayout } from '../../src/snapshotter/overlay.js'

describe.skipIf(needs({ root: isRoot }))('OverlayLayout', () => {
  let dir: string
  let layout: OverlayLayout
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'snapshotter-overlay-'))
    layout = new OverlayLayout(dir)
    layout.init()
  })
  afterAll(() => { rmSync(dir, { recursive: true, force: true }) })

  const indexOff = existsSync('/sys/module/overlay/parameters/index') ? ['index=off'] : []
  const fs = (id: string): string => join(dir, 'snapshots', id, 'fs')

  it('binds a parentless snapshot (ro for views) and a view of exactly one parent', () => {
    expect(layout.mounts('active', '1', [])).toEqual([{ type: 'bind', source: fs('1'), target: '', options: ['rw', 'rbind'] }])
    expect(layout.mounts('view', '1', [])).toEqual([{ type: 'bind', source: fs('1'), target: '', options: ['ro', 'rbind'] }])
    expect(layout.mounts('view', '5', ['3'])).toEqual([{ type: 'bind', source: fs('3'), target: '', options: ['ro', 'rbind'] }])
  })

  it('stacks parents nearest first; views get lowerdir only', () => {
    expect(layout.mounts('active', '9', ['3', '2', '1'])).toEqual([{
      type: 'overlay',
      source: 'overlay',
      target: '',
      options: [...indexOff, `workdir=${join(dir, 'snapshots', '9', 'work')}`, `upperdir=${fs('9')}`, `lowerdir=${fs('3')}:${fs('2')}:${fs('1')}`]
    }])
    expect(layout.mounts('view', '9', ['3', '2'])).toEqual([{ type: 'overlay', source: 'overlay', target: '', options: [...indexOff, `lowerdir=${fs('3')}:${fs('2')}`] }])
  })

  it('lists 128 layers in full (containerd\'s mount code compacts options longer than a page)', () => {
    const parents = Array.from({ length: 128 }, (_, i) => String(200 - i))
    const lower = layout.mounts('active', '999', parents)[0]?.options.find((o) => o.startsWith('lowerdir=')) ?? ''
    expect(lower.slice('lowerdir='.length).split(':')).toEqual(parents.map(fs))
  })

  it('prepares fs (0755, owned like the parent) and work (0711) in a temp dir', async () => {
    mkdirSync(fs('77'), { recursive: true })
    chownSync(fs('77'), 1234, 4321)
    const td = layout.prepareDirectory('active', await layout.ownerOf('77'))
    expect(statSync(join(td, 'fs'))).toMatchObject({ uid: 1234, gid: 4321 })
    expect(td).toMatch(/\/snapshots\/new-/)
    expect(statSync(join(td, 'fs')).mode & 0o777).toBe(0o755)
    expect(statSync(join(td, 'work')).mode & 0o777).toBe(0o711)
    const view = layout.prepareDirectory('view')
    expect(existsSync(join(view, 'work'))).toBe(false)
  })

  it('counts disk usage like containerd: allocated blocks, each inode once', async () => {
    const d = join(dir, 'du')
    mkdirSync(join(d, 'sub'), { recursive: true })
    writeFileSync(join(d, 'a'), Buffer.alloc(64 * 1024, 1))
    linkSync(join(d, 'a'), join(d, 'sub', 'hardlink'))
    const u = await diskUsage(d)
    expect(u.inodes).toBe(3) // d, sub, a (the hard link is the same inode)
    const blocks = [d, join(d, 'sub'), join(d, 'a')].reduce((n, p) => n + statSync(p).blocks * 512, 0)
    expect(u.size).toBe(blocks)
    expect(u.size).toBeGreaterThanOrEqual(64 * 1024)
  })
})
