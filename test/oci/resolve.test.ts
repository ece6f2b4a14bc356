import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { PlatformNotFoundError, UnknownMediaTypeError } from '../../src/oci/errors.js'
import { openOciLayout } from '../../src/oci/layout-reader.js'
import { MediaType } from '../../src/oci/media-types.js'
import { parsePlatform } from '../../src/oci/platform.js'
import { resolveImages } from '../../src/oci/resolve.js'
import { allBlobs, jsonBlob, makeImage, makeMultiPlatform, tagged, writeLayout } from '../../scripts/fixtures/oci-image.js'

describe('resolveImages', () => {
  let tmp: string
  const multi = makeMultiPlatform()
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'oci-resolve-test-'))
    await writeLayout(join(tmp, 'multi'), allBlobs(multi), [tagged(multi.index.descriptor, 'latest')])
  })
  afterAll(async () => { await rm(tmp, { recursive: true, force: true }) })

  it('walks a 2-platform index to both images', async () => {
    const src = await openOciLayout(join(tmp, 'multi'), 'latest')
    const r = await resolveImages(src)
    expect(r.root.digest).toBe(multi.index.descriptor.digest)
    expect(r.indexes).toHaveLength(1)
    expect(r.images.map(i => i.platform.architecture)).toEqual(['amd64', 'arm64'])
    expect(r.images[1].layers).toHaveLength(3)
    expect(r.images[1].config.rootfs.diff_ids).toEqual(multi.images[1].layers.map(l => l.diffId))
    await src.close()
  })

  it('filters by --platform', async () => {
    const src = await openOciLayout(join(tmp, 'multi'), 'latest')
    const arm = await resolveImages(src, { platform: parsePlatform('linux/arm64') })
    expect(arm.images).toHaveLength(1)
    expect(arm.images[0].descriptor.digest).toBe(multi.images[1].manifest.descriptor.digest)
    const amd = await resolveImages(src, { platform: parsePlatform('linux/x86_64') })
    expect(amd.images[0].descriptor.digest).toBe(multi.images[0].manifest.descriptor.digest)
    const err = await resolveImages(src, { platform: parsePlatform('linux/s390x') }).catch(e => e)
    expect(err).toBeInstanceOf(PlatformNotFoundError)
    expect(err.message).toContain('linux/amd64, linux/arm64/v8')
    await src.close()
  })

  it('checks a single manifest against --platform through its config', async () => {
    const img = makeImage({ platform: { os: 'linux', architecture: 'riscv64' } })
    await writeLayout(join(tmp, 'single'), allBlobs(img), [img.manifest.descriptor])
    const src = await openOciLayout(join(tmp, 'single'))
    expect((await resolveImages(src, { platform: parsePlatform('linux/riscv64') })).images).toHaveLength(1)
    await expect(resolveImages(src, { platform: parsePlatform('linux/amd64') })).rejects.toThrow(/available: linux\/riscv64/)
    await src.close()
  })

  it('rejects unknown layer media types naming the layer', async () => {
    const img = makeImage()
    const manifest = jsonBlob(MediaType.OciManifest, { ...img.manifest.json, layers: [{ ...img.layers[0].descriptor, mediaType: 'application/vnd.example.weird' }] })
    await writeLayout(join(tmp, 'weird'), [...allBlobs(img), manifest], [manifest.descriptor])
    const src = await openOciLayout(join(tmp, 'weird'))
    const err = await resolveImages(src).catch(e => e)
    expect(err).toBeInstanceOf(UnknownMediaTypeError)
    expect(err.message).toContain(img.layers[0].descriptor.digest)
    expect(err.message).toContain('application/vnd.example.weird')
    await src.close()
  })

  it('rejects a manifest whose descriptor claims another media type', async () => {
    const img = makeImage()
    await writeLayout(join(tmp, 'liar'), allBlobs(img), [{ ...img.manifest.descriptor, mediaType: MediaType.DockerManifest }])
    const src = await openOciLayout(join(tmp, 'liar'))
    await expect(resolveImages(src)).rejects.toMatchObject({ code: 'ERR_MALFORMED_MANIFEST', message: expect.stringContaining(img.manifest.descriptor.digest) })
    await src.close()
  })

  it('rejects a malformed config naming it', async () => {
    const img = makeImage()
    const config = jsonBlob(MediaType.OciConfig, { os: 'linux' })
    const manifest = jsonBlob(MediaType.OciManifest, { ...img.manifest.json, config: config.descriptor })
    await writeLayout(join(tmp, 'badcfg'), [...allBlobs(img), config, manifest], [manifest.descriptor])
    const src = await openOciLayout(join(tmp, 'badcfg'))
    await expect(resolveImages(src)).rejects.toMatchObject({ code: 'ERR_MALFORMED_CONFIG', message: expect.stringContaining(config.descriptor.digest) })
    await src.close()
  })
})
