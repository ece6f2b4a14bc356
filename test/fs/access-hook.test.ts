import { describe, expect, it } from 'vitest'
import { IsADirectoryError, ReadOnlyError } from '../../src/fs/errors.js'
import { LayerFs } from '../../src/fs/layer.js'
import { silentLogger } from '../../src/logging.js'
import { edgeEntries } from '../helpers/fixtures.js'
import { buildBlob, MemorySource } from './unit-helpers.js'

const logger = silentLogger()

describe('LayerFs onAccess', () => {
  it('reports every successful open with the path in the layer, and nothing else', async () => {
    const { blob, tocDigest } = await buildBlob(edgeEntries())
    const seen: string[] = []
    const fs = await LayerFs.open({ source: new MemorySource(blob), logger }, { tocDigest, onAccess: p => seen.push(p) })
    // lookups, attributes, listings and links are not accesses
    fs.getattr(fs.resolve('/a/big.bin'))
    fs.readdir(fs.resolve('/a'))
    fs.readlink(fs.resolve('/h/sym'))
    fs.open(fs.resolve('/a/owned'), 0)
    fs.open(fs.resolve('/h/link-to-big'), 0)
    fs.open(fs.resolve('/a/owned'), 0)
    expect(() => fs.open(fs.resolve('/a'), 0)).toThrow(IsADirectoryError)
    expect(() => fs.open(fs.resolve('/a/empty'), 1)).toThrow(ReadOnlyError)
    expect(seen).toEqual(['a/owned', 'h/link-to-big', 'a/owned'])
  })

  it('is off by default', async () => {
    const { blob, tocDigest } = await buildBlob(edgeEntries())
    const fs = await LayerFs.open({ source: new MemorySource(blob), logger }, { tocDigest })
    expect(() => fs.open(fs.resolve('/a/owned'), 0)).not.toThrow()
  })
})
