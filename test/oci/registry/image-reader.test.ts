import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { RegistryNotFoundError } from '../../../src/oci/errors.js'
import { MediaType } from '../../../src/oci/media-types.js'
import { parseImageReference, type RegistryReference } from '../../../src/oci/reference.js'
import { imageFromReader, pushImage } from '../../../src/oci/registry/push.js'
import { RegistryImageReader } from '../../../src/oci/registry/image-reader.js'
import { resolveImages } from '../../../src/oci/resolve.js'
import { hasCommand, needs } from '../../helpers/env.js'
import { makeMultiPlatform } from '../../../scripts/fixtures/oci-image.js'
import { sha256 } from '../../../scripts/fixtures/digest.js'
import { startFront, type Front } from '../front.js'
import { REGISTRY_BIN, startRegistry, type TestRegistry } from '../../../scripts/fixtures/registry.js'
import { imageReaderSuite } from '../image-reader-suite.js'

const ref = (s: string): RegistryReference => parseImageReference(s) as RegistryReference

describe.skipIf(needs({ 'docker-registry': hasCommand(REGISTRY_BIN) }))('RegistryImageReader', () => {
  let reg: TestRegistry
  let tamper: Front
  const multi = makeMultiPlatform({ docker: true })
  const layer = multi.images[1].layers[2].descriptor

  beforeAll(async () => {
    reg = await startRegistry()
    await pushImage(ref(`docker://${reg.host}/test/list:1`), {
      blobs: multi.images.flatMap(i => [...i.layers, i.config]).map(b => ({ descriptor: b.descriptor, open: async function * () { yield b.bytes } })),
      manifests: [...multi.images.map(i => i.manifest), multi.index]
    }, { plainHttp: true, dockerConfig: false })
    tamper = await startFront({ upstream: reg.host, tamper: req => req.url?.includes(layer.digest) === true })
  })
  afterAll(async () => {
    await tamper?.stop()
    await reg?.stop()
  })

  it('resolves a Docker manifest list by tag and by digest', async () => {
    const src = RegistryImageReader.open(ref(`docker://${reg.host}/test/list:1`), { plainHttp: true, dockerConfig: false })
    const root = await src.root()
    expect(root).toEqual({ mediaType: MediaType.DockerManifestList, digest: multi.index.descriptor.digest, size: multi.index.descriptor.size })
    const byDigest = RegistryImageReader.open(ref(`docker://${reg.host}/test/list@${root.digest}`), { plainHttp: true, dockerConfig: false })
    const r = await resolveImages(byDigest)
    expect(r.images.map(i => i.platform)).toEqual([{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64', variant: 'v8' }])
    expect(sha256(await byDigest.fetchBytes(layer))).toBe(layer.digest)
    // copy it to another repository through the source
    await pushImage(ref(`docker://${reg.host}/test/copy:1`), imageFromReader(byDigest, r), { plainHttp: true, dockerConfig: false })
    expect((await RegistryImageReader.open(ref(`docker://${reg.host}/test/copy:1`), { plainHttp: true }).root()).digest).toBe(root.digest)
  })

  it('fails with a digest mismatch naming the blob when the registry serves corrupt bytes', async () => {
    const src = RegistryImageReader.open(ref(`docker://${tamper.host}/test/list:1`), { plainHttp: true, dockerConfig: false })
    const r = await resolveImages(src)
    const err = await src.fetchBytes(r.images[1].layers[2]).catch(e => e)
    expect(err).toMatchObject({ code: 'ERR_DIGEST_MISMATCH' })
    expect(err.message).toContain(layer.digest)
    expect(err.message).toContain('test/list')
  })
})

imageReaderSuite('registry (docker://)', async (image) => {
  const registry = await startRegistry()
  const victim = image.layers[1]
  let front: Front | undefined
  try {
    const opts = { plainHttp: true, dockerConfig: false } as const
    await pushImage(ref(`docker://${registry.host}/suite/image:1`), {
      blobs: [...image.layers, image.config].map(b => ({ descriptor: b.descriptor, open: async function * () { yield b.bytes } })),
      manifests: [image.manifest]
    }, opts)
    // the registry checks what it stores: the corrupt bytes come from a front that flips one
    front = await startFront({ upstream: registry.host, tamper: req => req.method === 'GET' && req.url?.endsWith(`/blobs/${victim.descriptor.digest}`) === true })
    const tamperedHost = front.host
    const { mediaType, digest, size } = image.manifest.descriptor
    return {
      open: async () => RegistryImageReader.open(ref(`docker://${registry.host}/suite/image:1`), opts),
      openTampered: async () => ({ reader: RegistryImageReader.open(ref(`docker://${tamperedHost}/suite/image:1`), opts), desc: victim.descriptor }),
      notFoundCode: RegistryNotFoundError.code,
      root: { mediaType, digest, size },
      cleanup: async () => {
        await front?.stop()
        await registry.stop()
      }
    }
  } catch (err) {
    await front?.stop()
    await registry.stop()
    throw err
  }
}, { skip: needs({ 'docker-registry': hasCommand(REGISTRY_BIN) }) })
