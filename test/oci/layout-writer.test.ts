import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DigestMismatchError } from '../../src/oci/errors.js'
import { openOciLayout } from '../../src/oci/layout-reader.js'
import { OciLayoutWriter } from '../../src/oci/layout-writer.js'
import { resolveImages } from '../../src/oci/resolve.js'
import { allBlobs, makeImage, makeMultiPlatform } from '../../scripts/fixtures/oci-image.js'
import { sha256 } from '../../scripts/fixtures/digest.js'

async function * slowly (b: Uint8Array, corruptAt?: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < b.length; i += 100) {
    const piece = Buffer.from(b.subarray(i, i + 100))
    if (corruptAt != null && corruptAt >= i && corruptAt < i + 100) piece[corruptAt - i] ^= 1
    yield piece
  }
}

async function listAll (dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).map(String).sort()
}

describe('OciLayoutWriter', () => {
  let tmp: string
  beforeAll(async () => { tmp = await mkdtemp(join(tmpdir(), 'oci-writer-test-')) })
  afterAll(async () => { await rm(tmp, { recursive: true, force: true }) })

  it('writes a layout that the layout source reads back', async () => {
    const multi = makeMultiPlatform()
    const dir = join(tmp, 'out')
    const w = await OciLayoutWriter.open(dir)
    for (const b of allBlobs(multi)) await w.writeBlob(b.descriptor, b.bytes.length > 500 ? slowly(b.bytes) : b.bytes)
    w.addImage(multi.index.descriptor, 'v1')
    await w.commit()
    expect(JSON.parse(await readFile(join(dir, 'oci-layout'), 'utf8'))).toEqual({ imageLayoutVersion: '1.0.0' })
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8'))
    expect(index.manifests[0].annotations['org.opencontainers.image.ref.name']).toBe('v1')
    for (const b of allBlobs(multi)) expect(sha256(await readFile(join(dir, 'blobs/sha256', b.descriptor.digest.slice(7))))).toBe(b.descriptor.digest)
    const src = await openOciLayout(dir, 'v1')
    expect((await resolveImages(src)).images).toHaveLength(2)
    await src.close()

    // A second image in the same layout: index.json keeps both, same tag replaces.
    const other = makeImage({ seed: 'other' })
    const w2 = await OciLayoutWriter.open(dir)
    for (const b of allBlobs(other)) await w2.writeBlob(b.descriptor, b.bytes)
    w2.addImage(other.manifest.descriptor, 'v2')
    await w2.commit()
    const index2 = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8'))
    expect(index2.manifests.map((m: { annotations: Record<string, string> }) => m.annotations['org.opencontainers.image.ref.name'])).toEqual(['v1', 'v2'])
  })

  it('never leaves a half-written blob on a digest mismatch', async () => {
    const img = makeImage({ layerSize: 5000 })
    const dir = join(tmp, 'mismatch')
    const w = await OciLayoutWriter.open(dir)
    const before = await listAll(dir)
    const layer = img.layers[0]
    const err = await w.writeBlob(layer.descriptor, slowly(layer.bytes, 150)).catch(e => e)
    expect(err).toBeInstanceOf(DigestMismatchError)
    expect(err.message).toContain(layer.descriptor.digest)
    expect(await listAll(dir)).toEqual(before)
  })

  it('removes what it wrote on abort and leaves no index.json', async () => {
    const img = makeImage()
    const dir = join(tmp, 'aborted')
    const w = await OciLayoutWriter.open(dir)
    await w.writeBlob(img.layers[0].descriptor, img.layers[0].bytes)
    const ctl = new AbortController()
    const pending = w.writeBlob(img.layers[1].descriptor, (async function * () {
      yield img.layers[1].bytes.subarray(0, 10)
      ctl.abort()
      yield img.layers[1].bytes.subarray(10)
    })(), ctl.signal)
    await expect(pending).rejects.toThrow()
    await w.abort()
    expect(await listAll(dir)).toEqual(['blobs', 'blobs/sha256'])
  })

  it('refuses to commit an index.json that references a missing blob', async () => {
    const img = makeImage()
    const w = await OciLayoutWriter.open(join(tmp, 'dangling'))
    w.addImage(img.manifest.descriptor, 'x')
    await expect(w.commit()).rejects.toThrow(/was not written/)
  })
})
