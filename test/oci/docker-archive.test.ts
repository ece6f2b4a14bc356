import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openDockerArchive } from '../../src/oci/docker-archive.js'
import { BlobNotFoundError, ImageNotFoundError, MalformedLayoutError } from '../../src/oci/errors.js'
import { MediaType } from '../../src/oci/media-types.js'
import { openImageReader } from '../../src/oci/open.js'
import { resolveImages } from '../../src/oci/resolve.js'
import { makeImage, writeDockerArchive, writeTarFile } from '../../scripts/fixtures/oci-image.js'
import { makeTar } from '../../scripts/fixtures/tar.js'
import { sha256 } from '../../scripts/fixtures/digest.js'
import { imageReaderSuite, tamperInPlace } from './image-reader-suite.js'

describe('docker-archive reader', () => {
  let tmp: string
  const a = makeImage({ docker: true, seed: 'a', layerCount: 3 })
  const b = makeImage({ docker: true, seed: 'b' })
  beforeAll(async () => { tmp = await mkdtemp(join(tmpdir(), 'docker-archive-test-')) })
  afterAll(async () => { await rm(tmp, { recursive: true, force: true }) })

  it('presents a docker save archive as a Docker v2 schema 2 image', async () => {
    const file = join(tmp, 'one.tar')
    await writeDockerArchive(file, [{ image: a, tags: ['example/a:1'] }])
    const src = await openImageReader(`docker-archive:${file}`)
    try {
      const r = await resolveImages(src)
      expect(r.root.mediaType).toBe(MediaType.DockerManifest)
      const [img] = r.images
      expect(img.manifest.config).toEqual(a.config.descriptor)
      expect(img.layers.map(l => l.mediaType)).toEqual(Array(3).fill(MediaType.DockerLayer))
      expect(img.layers.map(l => l.digest)).toEqual(a.layers.map(l => l.diffId))
      expect(img.layers.map(l => l.size)).toEqual(a.layers.map(l => l.tar.length))
      expect(img.platform).toEqual({ os: 'linux', architecture: 'amd64' })
      for (const [i, l] of img.layers.entries()) expect(sha256(await src.fetchBytes(l))).toBe(a.layers[i].diffId)
    } finally { await src.close() }
  })

  it('detects gzip-compressed layer tars', async () => {
    const gz = makeImage({ seed: 'gz' }) // gzip layers
    const file = join(tmp, 'gz.tar')
    await writeDockerArchive(file, [{ image: gz, tags: [] }])
    const src = await openDockerArchive(file)
    const r = await resolveImages(src)
    expect(r.images[0].layers.map(l => l.mediaType)).toEqual([MediaType.DockerLayerGzip, MediaType.DockerLayerGzip])
    expect(r.images[0].layers.map(l => l.digest)).toEqual(gz.layers.map(l => l.descriptor.digest))
    await src.close()
  })

  it('selects among several images by tag or index, and lists tags otherwise', async () => {
    const file = join(tmp, 'two.tar')
    await writeDockerArchive(file, [{ image: a, tags: ['example/a:1'] }, { image: b, tags: ['example/b:latest'] }])
    const byTag = await openImageReader(`docker-archive:${file}:example/b`)
    expect((await resolveImages(byTag)).images[0].config.config?.Labels).toEqual({ seed: 'b' })
    await byTag.close()
    const byIndex = await openImageReader(`docker-archive:${file}:@0`)
    expect((await resolveImages(byIndex)).images[0].config.config?.Labels).toEqual({ seed: 'a' })
    await byIndex.close()
    const err = await openImageReader(`docker-archive:${file}`).catch(e => e)
    expect(err).toBeInstanceOf(ImageNotFoundError)
    expect(err.message).toContain('example/a:1, example/b:latest')
  })

  describe('bad input', () => {
    it('no manifest.json', async () => {
      const file = join(tmp, 'empty.tar')
      await writeTarFile(file, [{ name: 'x', data: 'y' }])
      await expect(openDockerArchive(file)).rejects.toThrow(/manifest.json is missing/)
    })

    it('malformed manifest.json', async () => {
      const file = join(tmp, 'badjson.tar')
      await writeTarFile(file, [{ name: 'manifest.json', data: '[{"Config": 3}]' }])
      await expect(openDockerArchive(file)).rejects.toThrow(MalformedLayoutError)
    })

    it('missing layer', async () => {
      const file = join(tmp, 'nolayer.tar')
      await writeTarFile(file, [
        { name: 'c.json', data: a.config.bytes },
        { name: 'manifest.json', data: JSON.stringify([{ Config: 'c.json', Layers: ['l1/layer.tar', 'l2/layer.tar', 'l3/layer.tar'] }]) }
      ])
      await expect(openDockerArchive(file)).rejects.toThrow(/layer l1\/layer.tar .* is missing/)
    })

    it('a layer that does not match its diff_id', async () => {
      const file = join(tmp, 'wrong.tar')
      const other = makeTar([{ name: 'z', data: 'other' }])
      await writeTarFile(file, [
        { name: 'c.json', data: b.config.bytes },
        { name: 'l1/layer.tar', data: b.layers[0].tar },
        { name: 'l2/layer.tar', data: other },
        { name: 'manifest.json', data: JSON.stringify([{ Config: 'c.json', Layers: ['l1/layer.tar', 'l2/layer.tar'] }]) }
      ])
      const err = await openDockerArchive(file).catch(e => e)
      expect(err).toMatchObject({ code: 'ERR_DIGEST_MISMATCH' })
      expect(err.message).toContain(b.layers[1].diffId)
      expect(err.message).toContain('l2/layer.tar')
    })

    it('malformed config', async () => {
      const file = join(tmp, 'badconfig.tar')
      await writeTarFile(file, [
        { name: 'c.json', data: '{"os":"linux"}' },
        { name: 'manifest.json', data: JSON.stringify([{ Config: 'c.json', Layers: [] }]) }
      ])
      await expect(openDockerArchive(file)).rejects.toMatchObject({ code: 'ERR_MALFORMED_CONFIG', message: expect.stringContaining('c.json') })
    })
  })
})

describe('docker-archive written by Docker 25+ (layers in blobs/, symlinked legacy paths)', () => {
  let tmp: string
  beforeAll(async () => { tmp = await mkdtemp(join(tmpdir(), 'docker-archive-25-test-')) })
  afterAll(async () => { await rm(tmp, { recursive: true, force: true }) })

  it('follows symlinks inside the archive', async () => {
    const img = makeImage({ docker: true, seed: 'moby25' })
    const hex = (d: string): string => d.slice(7)
    const entries = [
      { name: 'blobs/', type: 'dir' as const },
      { name: 'blobs/sha256/', type: 'dir' as const },
      ...img.layers.map(l => ({ name: `blobs/sha256/${hex(l.diffId)}`, data: l.bytes })),
      { name: `blobs/sha256/${hex(img.config.descriptor.digest)}`, data: img.config.bytes },
      ...img.layers.flatMap((l, i) => [
        { name: `legacy${i}/`, type: 'dir' as const },
        { name: `legacy${i}/layer.tar`, type: 'symlink' as const, linkName: `../blobs/sha256/${hex(l.diffId)}` }
      ]),
      { name: 'manifest.json', data: JSON.stringify([{ Config: `blobs/sha256/${hex(img.config.descriptor.digest)}`, RepoTags: ['m:25'], Layers: img.layers.map((_, i) => `legacy${i}/layer.tar`) }]) }
    ]
    const file = join(tmp, 'moby25.tar')
    await writeFile(file, makeTar(entries))
    const src = await openDockerArchive(file, { tag: 'm:25' })
    const r = await resolveImages(src)
    expect(r.images[0].layers.map(l => l.digest)).toEqual(img.layers.map(l => l.diffId))
    for (const l of r.images[0].layers) expect(sha256(await src.fetchBytes(l))).toBe(l.digest)
    await src.close()
  })
})

imageReaderSuite('docker-archive', async (image) => {
  const dir = await mkdtemp(join(tmpdir(), 'docker-archive-suite-'))
  const good = join(dir, 'good.tar')
  const tampered = join(dir, 'tampered.tar')
  await writeDockerArchive(good, [{ image, tags: ['suite/image:1'] }])
  await writeDockerArchive(tampered, [{ image, tags: ['suite/image:1'] }])
  const victim = image.layers[1]
  return {
    open: async () => await openImageReader(`docker-archive:${good}`),
    // the reader digests its layers when it opens the archive: the bytes change after that
    openTampered: async () => {
      const reader = await openImageReader(`docker-archive:${tampered}`)
      await tamperInPlace(tampered, victim.bytes)
      return { reader, desc: victim.descriptor }
    },
    notFoundCode: BlobNotFoundError.code,
    files: [dir],
    cleanup: async () => { await rm(dir, { recursive: true, force: true }) }
  }
}, { docker: true })
