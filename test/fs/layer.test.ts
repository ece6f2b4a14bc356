import { describe, expect, it } from 'vitest'
import { TocDigestMismatchError } from '../../src/estargz/index.js'
import { InvalidOperationError, IsADirectoryError, NoEntryError, NoXattrError, NotADirectoryError, ReadOnlyError, VerificationRequiredError } from '../../src/fs/errors.js'
import { LayerFs, makedev } from '../../src/fs/layer.js'
import { silentLogger } from '../../src/logging.js'
import { edgeEntries, fileContents } from '../helpers/fixtures.js'
import { buildBlob, MemorySource } from './unit-helpers.js'

const logger = silentLogger()

describe('LayerFs', () => {
  it('refuses a layer without a trusted TOC digest unless allowNoVerification, and a wrong digest', async () => {
    const { blob, tocDigest } = await buildBlob(edgeEntries())
    await expect(LayerFs.open({ source: new MemorySource(blob), logger })).rejects.toBeInstanceOf(VerificationRequiredError)
    await expect(LayerFs.open({ source: new MemorySource(blob), logger }, { tocDigest: 'sha256:' + '0'.repeat(64) })).rejects.toBeInstanceOf(TocDigestMismatchError)
    const fs = await LayerFs.open({ source: new MemorySource(blob), logger }, { allowNoVerification: true })
    expect(fs.estargz.tocDigest).toBe(tocDigest)
  })

  it('gives stable inodes, hardlinks one inode, overlayfs whiteouts, attributes and errors', async () => {
    const entries = edgeEntries()
    const { blob, tocDigest } = await buildBlob(entries, { chunkSize: 64 << 10 })
    const a = await LayerFs.open({ source: new MemorySource(blob), logger }, { tocDigest })
    const b = await LayerFs.open({ source: new MemorySource(blob), logger }, { tocDigest })
    for (const p of ['/a/big.bin', '/orphan/deep', '/w/gone', '/dev/null', '/']) expect(a.resolve(p).ino).toBe(b.resolve(p).ino)
    expect(a.root.ino).toBe(1)
    expect(a.resolve('/h/link-to-big').ino).toBe(a.resolve('/a/big.bin').ino)
    expect(a.getattr(a.resolve('/a/big.bin')).nlink).toBe(2)
    const inos = new Set<number>()
    const walk = (e = a.root): void => {
      for (const d of a.readdir(e).slice(2)) {
        if (d.entry.node.type !== 'reg' || d.entry.node.numLink === 1) {
          expect(inos.has(d.entry.ino), a.pathOf(d.entry)).toBe(false)
          inos.add(d.entry.ino)
        }
        if (d.entry.node.type === 'dir') walk(d.entry)
      }
    }
    walk()
    // Whiteouts: .wh.gone → char 0:0 "gone"; .wh..wh..opq → opaque xattr; both hidden.
    expect(a.readdir(a.resolve('/w')).map(d => d.name)).toEqual(['.', '..', 'gone'])
    const gone = a.getattr(a.resolve('/w/gone'))
    expect(gone.mode).toBe(0o020000)
    expect(gone.rdev).toBe(0)
    expect(a.readdir(a.resolve('/o')).map(d => d.name)).toEqual(['.', '..', 'kept'])
    expect(a.listxattr(a.resolve('/o'))).toContain('trusted.overlay.opaque')
    expect(Buffer.from(a.getxattr(a.resolve('/o'), 'trusted.overlay.opaque')).toString()).toBe('y')
    expect(() => a.getxattr(a.resolve('/a'), 'trusted.overlay.opaque')).toThrow(NoXattrError)
    expect(Buffer.from(a.getxattr(a.resolve('/a/xattr.txt'), 'user.test')).toString()).toBe('hello')
    // Attributes.
    const big = a.getattr(a.resolve('/a/big.bin'))
    expect(big.size).toBe(5 * 65536 + 12345)
    expect(big.blocks).toBe(Math.ceil(big.size / 4096) * 8)
    expect(a.getattr(a.resolve('/a/plus1.bin')).mode).toBe(0o100000 | 0o4755)
    expect(a.getattr(a.resolve('/dev/null')).rdev).toBe(makedev(1, 3))
    expect(a.getattr(a.resolve('/dev/loop0')).mode & 0o170000).toBe(0o060000)
    expect(a.getattr(a.resolve('/h/sym')).mode).toBe(0o120777)
    expect(a.readlink(a.resolve('/h/sym'))).toBe('../a/exact.bin')
    expect(a.readdir(a.resolve('/')).map(d => d.name).slice(0, 3)).toEqual(['.', '..', 'a'])
    // Errors.
    expect(() => a.resolve('/nope')).toThrow(NoEntryError)
    expect(() => a.resolve('/a/owned/x')).toThrow(NotADirectoryError)
    expect(() => a.readlink(a.resolve('/a/owned'))).toThrow(InvalidOperationError)
    expect(() => a.open(a.resolve('/a/owned'), 1)).toThrow(ReadOnlyError)
    expect(() => a.open(a.resolve('/a'), 0)).toThrow(IsADirectoryError)
    await expect(a.read(a.resolve('/a'), 0, 10)).rejects.toBeInstanceOf(IsADirectoryError)
    // Reads are verified file bytes.
    const files = fileContents(entries)
    expect(Buffer.from(await a.read(a.resolve('/a/big.bin'), 65530, 70000)).equals((files.get('a/big.bin') as Buffer).subarray(65530, 135530))).toBe(true)
    expect((await a.read(a.resolve('/a/empty'), 0, 10)).length).toBe(0)
  })
})
