import { execFile } from 'node:child_process'
import { mkdir, mkdtemp, open, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fuseMountsUnder, lazyUnmount, mountsUnder, mountsUnderSync, parseMountInfo, unmountUnder } from '../../src/fs/mountinfo.js'
import { isRoot, needs } from '../helpers/env.js'
import { removeWorkDir } from '../../scripts/fixtures/work-dir.js'

const run = promisify(execFile)

describe('parseMountInfo', () => {
  it('parses fields and octal escapes', () => {
    const text = '42 27 0:39 / /tmp/a\\040b ro,nosuid - fuse ipfs-estargz ro,user_id=0\n36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw\n'
    expect(parseMountInfo(text)).toEqual([
      { mountpoint: '/tmp/a b', fstype: 'fuse', source: 'ipfs-estargz' },
      { mountpoint: '/mnt2', fstype: 'ext3', source: '/dev/root' }
    ])
  })

  it('skips lines without the separator', () => {
    expect(parseMountInfo('garbage\n1 2 3 4 /x rw\n')).toEqual([])
  })
})

describe.skipIf(needs({ root: isRoot }))('mounts under a folder, and lazy unmount', () => {
  let dir: string
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'mountinfo-')) })
  afterAll(async () => {
    await removeWorkDir(dir)
  })

  /** A tmpfs at `at` (made first) holding one file. */
  const tmpfs = async (at: string): Promise<void> => {
    await mkdir(at, { recursive: true })
    await run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', at])
    await writeFile(join(at, 'f'), 'x')
  }

  it('lists the mounts at and below a folder (escaped names too), deepest first, and not those of a sibling sharing its prefix', async () => {
    const root = join(dir, 'a')
    await tmpfs(root)
    await tmpfs(join(root, 'nested dir'))
    await tmpfs(join(dir, 'ab')) // shares the prefix "a", is not below it
    expect(await mountsUnder(root)).toEqual([join(root, 'nested dir'), root])
    expect(mountsUnderSync(root)).toEqual([join(root, 'nested dir'), root])
    expect(await mountsUnder(root + '/')).toEqual([join(root, 'nested dir'), root])
    expect(await fuseMountsUnder(root)).toEqual([]) // tmpfs is no FUSE
  })

  it('unmounts everything under a folder but what it keeps, a mount with a file open too', async () => {
    const root = join(dir, 'u')
    await tmpfs(join(root, 'one'))
    await tmpfs(join(root, 'one', 'nested'))
    await tmpfs(join(root, 'two'))
    const held = await open(join(root, 'one', 'nested', 'f'))
    try {
      expect(await unmountUnder(root, new Set([join(root, 'two')]))).toEqual([])
      expect(await mountsUnder(root)).toEqual([join(root, 'two')])
    } finally {
      await held.close()
    }
    await lazyUnmount(join(root, 'two'))
    expect(await mountsUnder(root)).toEqual([])
  })

  it('lazyUnmount rejects where nothing is mounted', async () => {
    const plain = join(dir, 'plain')
    await mkdir(plain, { recursive: true })
    await expect(lazyUnmount(plain)).rejects.toThrow()
  })
})
