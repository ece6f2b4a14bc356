import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { convertImage, type ConvertOptions } from '../../src/convert/index.js'
import { LayoutPublisher } from '../../src/convert/layout-publisher.js'
import { EstargzReader, PrioritizedFileNotFoundError } from '../../src/estargz/index.js'
import { silentLogger } from '../../src/logging.js'
import { openOciLayout } from '../../src/oci/index.js'
import { FileSource } from '../../src/source/file.js'
import { allBlobs, makeImage, tagged, writeLayout } from '../../scripts/fixtures/oci-image.js'

const logger = silentLogger()

/** TOC entry names of a layer in a layout, in TOC order, chunk entries left out. */
async function tocNames (layout: string, digest: string): Promise<string[]> {
  const f = await FileSource.open(join(layout, 'blobs', 'sha256', digest.slice(7)))
  try {
    const r = await EstargzReader.open(f.read.bind(f), await f.size())
    return r.toc.entries.filter(e => e.type !== 'chunk').map(e => e.name)
  } finally {
    await f.close()
  }
}

describe('convertImage layerOptions', () => {
  let dir: string
  const img = makeImage({ layerCount: 2 })

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'convert-layer-options-'))
    await writeLayout(join(dir, 'src'), allBlobs(img), [tagged(img.manifest.descriptor, 'latest')])
  })
  afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

  async function convert (src: string, out: string, layerOptions?: ConvertOptions['layerOptions']): Promise<Awaited<ReturnType<typeof convertImage>>> {
    const source = await openOciLayout(src)
    const layout = await LayoutPublisher.open(out)
    try {
      return await convertImage(source, [layout], { name: 'test', tmpDir: dir, logger, layerOptions })
    } catch (err) {
      await layout.abort()
      throw err
    } finally {
      await source.close()
    }
  }

  it('puts a layer\'s prioritized files first, then .prefetch.landmark; other layers start with .no.prefetch.landmark', async () => {
    const r = await convert(join(dir, 'src'), join(dir, 'out1'), d => d.digest === img.layers[0].descriptor.digest ? { prioritizedFiles: ['dir0/big.bin', 'dir0/link'] } : undefined)
    const [l0, l1] = r.images[0].layers
    expect([l0.landmark, l1.landmark]).toEqual(['prefetch', 'no-prefetch'])
    expect((await tocNames(join(dir, 'out1'), l0.descriptor.digest)).slice(0, 4)).toEqual(['dir0/', 'dir0/big.bin', 'dir0/link', '.prefetch.landmark'])
    expect((await tocNames(join(dir, 'out1'), l1.descriptor.digest))[0]).toBe('.no.prefetch.landmark')
  })

  it('keeps eStargz layers as they are unless reusable says no, and always rebuilds a layer given prioritized files', async () => {
    const first = await convert(join(dir, 'src'), join(dir, 'out2'), d => d.digest === img.layers[0].descriptor.digest ? { prioritizedFiles: ['dir0/file.txt'] } : undefined)
    const [e0, e1] = first.images[0].layers.map(l => l.descriptor.digest)
    // a second conversion keeps both (push's behaviour)
    const kept = await convert(join(dir, 'out2'), join(dir, 'out3'))
    expect(kept.images[0].layers.map(l => [l.reused, l.landmark, l.descriptor.digest])).toEqual([[true, 'prefetch', e0], [true, 'no-prefetch', e1]])
    // not reusable when it has a .prefetch.landmark: rebuilt without one
    const notPrefetched = await convert(join(dir, 'out2'), join(dir, 'out4'), () => ({ reusable: r => r.tree.prefetchOffset == null }))
    const [n0, n1] = notPrefetched.images[0].layers
    expect([n0.reused, n0.landmark, n1.reused, n1.descriptor.digest]).toEqual([false, 'no-prefetch', true, e1])
    expect((await tocNames(join(dir, 'out4'), n0.descriptor.digest))[0]).toBe('.no.prefetch.landmark')
    // prioritized files on an eStargz layer: rebuilt in the new order (the old landmark and TOC dropped)
    const again = await convert(join(dir, 'out2'), join(dir, 'out5'), d => d.digest === e1 ? { prioritizedFiles: ['dir1/big.bin'] } : undefined)
    const a1 = again.images[0].layers[1]
    expect([a1.reused, a1.landmark]).toEqual([false, 'prefetch'])
    const names = await tocNames(join(dir, 'out5'), a1.descriptor.digest)
    expect(names.slice(0, 3)).toEqual(['dir1/', 'dir1/big.bin', '.prefetch.landmark'])
    expect(names.filter(n => n.includes('landmark') || n === 'stargz.index.json')).toEqual(['.prefetch.landmark'])
  })

  it('fails with the writer\'s typed error when a prioritized file is not in the layer', async () => {
    await expect(convert(join(dir, 'src'), join(dir, 'out6'), () => ({ prioritizedFiles: ['no/such/file'] }))).rejects.toBeInstanceOf(PrioritizedFileNotFoundError)
  })
})
