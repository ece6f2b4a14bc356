import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BlobNotFoundError, ImageNotFoundError, MalformedIndexError, MalformedLayoutError } from '../../src/oci/errors.js'
import { openOciArchive, openOciLayout } from '../../src/oci/layout-reader.js'
import { MediaType } from '../../src/oci/media-types.js'
import { openImageReader } from '../../src/oci/open.js'
import type { ImageReader } from '../../src/oci/image-reader.js'
import { allBlobs, makeImage, makeMultiPlatform, tagged, writeLayout, writeOciArchive } from '../../scripts/fixtures/oci-image.js'
import { sha256 } from '../../scripts/fixtures/digest.js'
import { flipped, imageReaderSuite } from './image-reader-suite.js'

async function bytesOf (src: ImageReader, d: Parameters<ImageReader['fetch']>[0]): Promise<Buffer> {
  const parts: Uint8Array[] = []
  for await (const p of await src.fetch(d)) parts.push(p)
  return Buffer.concat(parts)
}

describe('OCI layout and oci-archive sources', () => {
  let tmp: string
  const multi = makeMultiPlatform()
  const single = makeImage({ seed: 'single' })
  beforeAll(async () => { tmp = await mkdtemp(join(tmpdir(), 'oci-layout-test-')) })
  afterAll(async () => { await rm(tmp, { recursive: true, force: true }) })

  for (const kind of ['oci', 'oci-archive'] as const) {
    describe(kind, () => {
      let path: string
      beforeAll(async () => {
        path = join(tmp, `${kind}-two`)
        const blobs = [...allBlobs(multi), ...allBlobs(single)]
        const entries = [tagged(multi.index.descriptor, 'multi'), tagged(single.manifest.descriptor, 'single')]
        if (kind === 'oci') await writeLayout(path, blobs, entries)
        else await writeOciArchive(path, blobs, entries)
      })

      it('selects the image by tag and reads verified blobs', async () => {
        const src = await openImageReader(`${kind}:${path}:single`)
        try {
          const root = await src.root()
          expect(root.digest).toBe(single.manifest.descriptor.digest)
          expect(root.mediaType).toBe(MediaType.OciManifest)
          for (const b of allBlobs(single)) expect(sha256(await bytesOf(src, b.descriptor))).toBe(b.descriptor.digest)
          expect(await src.fetchBytes(single.config.descriptor)).toEqual(Buffer.from(single.config.bytes))
        } finally { await src.close() }
      })

      it('lists the tags when no tag is given and several images are present', async () => {
        const err = await openImageReader(`${kind}:${path}`).then(s => s.root().finally(async () => { await s.close() })).catch(e => e)
        expect(err).toBeInstanceOf(ImageNotFoundError)
        expect(err.message).toMatch(/multi, single/)
      })

      it('names the tags when the tag is unknown', async () => {
        const src = await openImageReader(`${kind}:${path}:nope`)
        await expect(src.root()).rejects.toThrow(/tag "nope" not found .*tags: multi, single/)
        await src.close()
      })

      it('fails with a typed error for a blob that is not there', async () => {
        const src = await openImageReader(`${kind}:${path}:multi`)
        const missing = { mediaType: MediaType.OciLayerGzip, digest: sha256(Buffer.from('nope')), size: 4 }
        await expect(src.fetch(missing)).rejects.toMatchObject({ code: 'ERR_BLOB_NOT_FOUND', message: expect.stringContaining(missing.digest) })
        await src.close()
      })
    })
  }

  it('uses index.json itself as the index when it lists untagged manifests', async () => {
    const dir = join(tmp, 'untagged')
    await writeLayout(dir, allBlobs(multi), multi.index.json.manifests)
    const src = await openOciLayout(dir)
    const root = await src.root()
    expect(root.mediaType).toBe(MediaType.OciIndex)
    expect(JSON.parse((await src.fetchBytes(root)).toString()).manifests).toHaveLength(2)
    await src.close()
  })

  it('reads an archive without extracting it (only the tar file exists)', async () => {
    const file = join(tmp, 'single.tar')
    await writeOciArchive(file, allBlobs(single), [single.manifest.descriptor])
    const src = await openOciArchive(file)
    expect((await src.root()).digest).toBe(single.manifest.descriptor.digest)
    await src.close()
  })

  describe('bad input', () => {
    it('missing oci-layout', async () => {
      const dir = join(tmp, 'no-layout')
      await writeLayout(dir, allBlobs(single), [single.manifest.descriptor], { skipLayoutFile: true })
      await expect(openOciLayout(dir)).rejects.toThrow(MalformedLayoutError)
    })

    it('missing index.json', async () => {
      const dir = join(tmp, 'no-index')
      await writeLayout(dir, allBlobs(single), [single.manifest.descriptor])
      await rm(join(dir, 'index.json'))
      await expect(openOciLayout(dir)).rejects.toThrow(/index.json is missing/)
    })

    it('malformed index.json', async () => {
      const dir = join(tmp, 'bad-index')
      await writeLayout(dir, allBlobs(single), [single.manifest.descriptor])
      await writeFile(join(dir, 'index.json'), '{"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"sha256:1","size":1}]}')
      const err = await openOciLayout(dir).catch(e => e)
      expect(err).toBeInstanceOf(MalformedIndexError)
      expect(err.message).toContain('index.json')
      expect(err.message).toContain('manifests[0].digest')
    })

    it('a corrupted blob fails with a digest mismatch naming it', async () => {
      const dir = join(tmp, 'corrupt')
      await writeLayout(dir, allBlobs(single), [single.manifest.descriptor])
      const layer = single.layers[0].descriptor
      const corrupt = Buffer.from(single.layers[0].bytes)
      corrupt[corrupt.length - 10] ^= 0xff
      await writeFile(join(dir, 'blobs', 'sha256', layer.digest.slice(7)), corrupt)
      const src = await openOciLayout(dir)
      const err = await bytesOf(src, layer).catch(e => e)
      expect(err).toMatchObject({ code: 'ERR_DIGEST_MISMATCH' })
      expect(err.message).toContain(layer.digest)
      await src.close()
    })

    it('a truncated blob fails with a size mismatch before streaming', async () => {
      const dir = join(tmp, 'short')
      await writeLayout(dir, allBlobs(single), [single.manifest.descriptor])
      const layer = single.layers[1].descriptor
      await writeFile(join(dir, 'blobs', 'sha256', layer.digest.slice(7)), single.layers[1].bytes.subarray(0, 10))
      const src = await openOciLayout(dir)
      await expect(src.fetch(layer)).rejects.toMatchObject({ code: 'ERR_SIZE_MISMATCH', message: expect.stringContaining(layer.digest) })
      await src.close()
    })

    it('an archive that is not a tar', async () => {
      const file = join(tmp, 'garbage.tar')
      await writeFile(file, Buffer.alloc(2048, 7))
      await expect(openOciArchive(file)).rejects.toThrow(MalformedLayoutError)
    })

    it('a path that does not exist', async () => {
      await expect(openOciLayout(join(tmp, 'nothing'))).rejects.toThrow(/not a directory/)
      await expect(openOciArchive(join(tmp, 'nothing.tar'))).rejects.toThrow(/not a file/)
    })
  })
})

for (const kind of ['oci', 'oci-archive'] as const) {
  imageReaderSuite(kind === 'oci' ? 'OCI layout dir' : 'oci-archive', async (image) => {
    const dir = await mkdtemp(join(tmpdir(), 'oci-suite-'))
    const blobs = allBlobs(image)
    const victim = image.layers[1]
    const entries = [tagged(image.manifest.descriptor, 'latest')]
    const write = kind === 'oci' ? writeLayout : writeOciArchive
    await write(join(dir, 'good'), blobs, entries)
    await write(join(dir, 'tampered'), blobs.map(b => b === victim ? { ...b, bytes: flipped(b.bytes) } : b), entries)
    const { mediaType, digest, size } = image.manifest.descriptor
    return {
      open: async () => await openImageReader(`${kind}:${join(dir, 'good')}:latest`),
      openTampered: async () => ({ reader: await openImageReader(`${kind}:${join(dir, 'tampered')}:latest`), desc: victim.descriptor }),
      notFoundCode: BlobNotFoundError.code,
      root: { mediaType, digest, size },
      files: [dir],
      cleanup: async () => { await rm(dir, { recursive: true, force: true }) }
    }
  })
}
