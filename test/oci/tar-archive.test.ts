import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TarArchive } from '../../src/oci/tar-archive.js'
import { makeTar } from '../../scripts/fixtures/tar.js'

describe('TarArchive', () => {
  let tmp: string
  let file: string
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'oci-tar-test-'))
    file = join(tmp, 'a.tar')
    await writeFile(file, makeTar([
      { name: './', type: 'dir' },
      { name: './a/', type: 'dir' },
      { name: './a/file', data: 'hello' },
      { name: './a/big', data: Buffer.alloc(3 << 20, 9) },
      { name: './b', type: 'symlink', linkName: 'a/file' },
      { name: './a/up', type: 'symlink', linkName: '../b' },
      { name: './escape', type: 'symlink', linkName: '../../etc/passwd' },
      { name: './loop', type: 'symlink', linkName: 'loop' }
    ]))
  })
  afterAll(async () => { await rm(tmp, { recursive: true, force: true }) })

  it('indexes members and reads them by offset, following symlinks inside the archive', async () => {
    const t = await TarArchive.open(file)
    expect(t.names()).toContain('a/file')
    expect(Buffer.from((await t.read('a/file')) as Uint8Array).toString()).toBe('hello')
    expect(Buffer.from((await t.read('b')) as Uint8Array).toString()).toBe('hello')
    expect(Buffer.from((await t.read('a/up')) as Uint8Array).toString()).toBe('hello')
    expect(await t.size('a/big')).toBe(3 << 20)
    let n = 0
    for await (const p of t.stream('a/big')) n += p.length
    expect(n).toBe(3 << 20)
    expect(await t.read('escape')).toBeUndefined()
    expect(await t.read('missing')).toBeUndefined()
    expect(await t.read('a')).toBeUndefined()
    await expect(t.read('loop')).rejects.toMatchObject({ code: 'ERR_MALFORMED_LAYOUT' })
    await expect(t.read('../x')).rejects.toMatchObject({ code: 'ERR_MALFORMED_LAYOUT' })
    await t.close()
    await expect(t.read('a/file')).rejects.toMatchObject({ code: 'ERR_CLOSED' })
  })

  it('rejects a file that is not a tar', async () => {
    const bad = join(tmp, 'bad.tar')
    await writeFile(bad, 'this is not a tar archive'.repeat(100))
    await expect(TarArchive.open(bad)).rejects.toMatchObject({ code: 'ERR_MALFORMED_LAYOUT', message: expect.stringContaining(bad) })
  })
})
