import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MediaType } from '../../../src/oci/media-types.js'
import { openImageReader } from '../../../src/oci/open.js'
import { parsePlatform } from '../../../src/oci/platform.js'
import { parseImageReference, type RegistryReference } from '../../../src/oci/reference.js'
import { imageFromReader, pushImage } from '../../../src/oci/registry/push.js'
import { resolveImages } from '../../../src/oci/resolve.js'
import type { ImageReader } from '../../../src/oci/image-reader.js'
import { hasCommand, needs } from '../../helpers/env.js'
import { allBlobs, makeImage, makeMultiPlatform, tagged, writeDockerArchive, writeLayout, writeOciArchive } from '../../../scripts/fixtures/oci-image.js'
import { sha256 } from '../../../scripts/fixtures/digest.js'
import { REGISTRY_BIN, startRegistry, type TestRegistry } from '../../../scripts/fixtures/registry.js'

const ref = (s: string): RegistryReference => parseImageReference(s) as RegistryReference

async function copy (from: string, to: string, opts: { platform?: string, monolithicMaxBytes?: number, chunkBytes?: number } = {}): Promise<{ pushed: string, uploaded: string[], skipped: string[] }> {
  const src = await openImageReader(from)
  try {
    const r = await resolveImages(src, { platform: opts.platform != null ? parsePlatform(opts.platform) : undefined })
    const res = await pushImage(ref(to), imageFromReader(src, r), { plainHttp: true, dockerConfig: false, ...opts })
    return { pushed: res.digest, uploaded: res.uploaded, skipped: res.skipped }
  } finally { await src.close() }
}

async function readAll (src: ImageReader): Promise<Map<string, string>> {
  const r = await resolveImages(src)
  const seen = new Map<string, string>()
  for (const img of r.images) {
    for (const d of [img.manifest.config, ...img.layers]) seen.set(d.digest, sha256(await src.fetchBytes(d)))
  }
  return seen
}

describe.skipIf(needs({ 'docker-registry': hasCommand(REGISTRY_BIN) }))('pushImage against a real registry', () => {
  let reg: TestRegistry
  let tmp: string
  const multi = makeMultiPlatform()
  const dockerImg = makeImage({ docker: true, seed: 'docker', layerCount: 3 })

  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'oci-push-test-'))
    reg = await startRegistry()
    await writeLayout(join(tmp, 'layout'), allBlobs(multi), [tagged(multi.index.descriptor, 'latest')])
    await writeOciArchive(join(tmp, 'multi.tar'), allBlobs(multi), [tagged(multi.index.descriptor, 'latest')])
    await writeDockerArchive(join(tmp, 'docker.tar'), [{ image: dockerImg, tags: ['t/docker:1'] }])
  })
  afterAll(async () => {
    await reg?.stop()
    await rm(tmp, { recursive: true, force: true })
  })

  it('pushes a 2-platform OCI layout and reads it back through docker://', async () => {
    const out = await copy(`oci:${join(tmp, 'layout')}:latest`, `docker://${reg.host}/test/multi:v1`)
    expect(out.pushed).toBe(multi.index.descriptor.digest)
    expect(out.uploaded).toHaveLength(2 + 3 + 2) // layers + configs
    const src = await openImageReader(`docker://${reg.host}/test/multi:v1`, { plainHttp: true, dockerConfig: false })
    const root = await src.root()
    expect(root).toMatchObject({ mediaType: MediaType.OciIndex, digest: multi.index.descriptor.digest, size: multi.index.descriptor.size })
    const r = await resolveImages(src)
    expect(r.images.map(i => i.descriptor.digest)).toEqual(multi.images.map(i => i.manifest.descriptor.digest))
    const blobs = await readAll(src)
    for (const [want, got] of blobs) expect(got).toBe(want)
    const arm = await resolveImages(src, { platform: parsePlatform('linux/arm64') })
    expect(arm.images.map(i => i.layers.length)).toEqual([3])
    await src.close()
  })

  it('skips blobs the registry already has', async () => {
    const out = await copy(`oci:${join(tmp, 'layout')}:latest`, `docker://${reg.host}/test/multi:v1`)
    expect(out.uploaded).toEqual([])
    expect(out.skipped).toHaveLength(7)
  })

  it('pushes one platform of an oci-archive with chunked uploads', async () => {
    const out = await copy(`oci-archive:${join(tmp, 'multi.tar')}:latest`, `docker://${reg.host}/test/arm:v1`, { platform: 'linux/arm64', monolithicMaxBytes: 100, chunkBytes: 64 })
    expect(out.pushed).toBe(multi.images[1].manifest.descriptor.digest)
    const src = await openImageReader(`docker://${reg.host}/test/arm:v1`, { plainHttp: true, dockerConfig: false })
    const root = await src.root()
    expect(root.mediaType).toBe(MediaType.OciManifest)
    for (const [want, got] of await readAll(src)) expect(got).toBe(want)
    await src.close()
  })

  it('pushes a docker-archive as Docker v2 schema 2 and reads it back by digest', async () => {
    const out = await copy(`docker-archive:${join(tmp, 'docker.tar')}`, `docker://${reg.host}/test/docker:1`)
    const src = await openImageReader(`docker://${reg.host}/test/docker@${out.pushed}`, { plainHttp: true, dockerConfig: false })
    const r = await resolveImages(src)
    expect(r.root.mediaType).toBe(MediaType.DockerManifest)
    expect(r.images[0].manifest.config.mediaType).toBe(MediaType.DockerConfig)
    expect(r.images[0].layers.map(l => l.mediaType)).toEqual(Array(3).fill(MediaType.DockerLayer))
    expect(r.images[0].layers.map(l => l.digest)).toEqual(dockerImg.layers.map(l => l.diffId))
    for (const [want, got] of await readAll(src)) expect(got).toBe(want)
    await src.close()
  })

  it('refuses to push a blob whose bytes do not match its descriptor', async () => {
    const img = makeImage({ seed: 'bad' })
    const bad = { ...img.layers[0].descriptor, digest: sha256(Buffer.from('something else')) }
    const err = await pushImage(ref(`docker://${reg.host}/test/bad:1`), {
      blobs: [{ descriptor: bad, open: async function * () { yield img.layers[0].bytes } }],
      manifests: [{ descriptor: img.manifest.descriptor, bytes: img.manifest.bytes }]
    }, { plainHttp: true, dockerConfig: false }).catch(e => e)
    expect(err).toMatchObject({ code: 'ERR_DIGEST_MISMATCH', message: expect.stringContaining(bad.digest) })
    // nothing was tagged
    const src = await openImageReader(`docker://${reg.host}/test/bad:1`, { plainHttp: true, dockerConfig: false, retries: 0 })
    await expect(src.root()).rejects.toMatchObject({ code: 'ERR_REGISTRY_NOT_FOUND' })
  })
})
