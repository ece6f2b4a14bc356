import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { RegistryClient } from '../../../src/oci/registry/client.js'
import { Repository } from '../../../src/oci/registry/repository.js'
import { MediaType } from '../../../src/oci/media-types.js'
import { hasCommand, needs } from '../../helpers/env.js'
import { blob, makeImage } from '../../../scripts/fixtures/oci-image.js'
import { sha256 } from '../../../scripts/fixtures/digest.js'
import { startFront, type Front } from '../front.js'
import { REGISTRY_BIN, startRegistry, type TestRegistry } from '../../../scripts/fixtures/registry.js'

async function * chunks (b: Uint8Array, n = 1000): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < b.length; i += n) yield b.subarray(i, i + n)
}

describe.skipIf(needs({ 'docker-registry': hasCommand(REGISTRY_BIN) }))('Repository (Distribution API v2)', () => {
  let reg: TestRegistry
  let front: Front
  let repo: Repository
  beforeAll(async () => {
    reg = await startRegistry()
    front = await startFront({ upstream: reg.host })
    repo = new Repository(new RegistryClient(front.host, { plainHttp: true, dockerConfig: false }), 'test/repo')
  })
  afterAll(async () => {
    await front?.stop()
    await reg?.stop()
  })

  it('uploads small blobs with one PUT and big ones in PATCH chunks', async () => {
    const small = blob('application/octet-stream', Buffer.alloc(3000, 1))
    const big = blob('application/octet-stream', Buffer.alloc(10_000, 2).map((_, i) => i % 251))
    front.log.length = 0
    await repo.uploadBlob(small.descriptor, () => chunks(small.bytes), { monolithicMaxBytes: 4096 })
    expect(front.log.filter(l => l.startsWith('PATCH'))).toHaveLength(0)
    await repo.uploadBlob(big.descriptor, () => chunks(big.bytes, 777), { monolithicMaxBytes: 4096, chunkBytes: 4096 })
    expect(front.log.filter(l => l.startsWith('PATCH'))).toHaveLength(3) // 4096 + 4096 + 1808
    expect(await repo.blobExists(big.descriptor.digest)).toBe(true)
    expect(await repo.blobSize(small.descriptor.digest)).toBe(3000)
    expect(await repo.blobSize(sha256(Buffer.from('absent')))).toBeUndefined()
    const whole = await repo.getBlob(big.descriptor.digest)
    expect(sha256(new Uint8Array(await whole.arrayBuffer()))).toBe(big.descriptor.digest)
    const part = await repo.getBlob(big.descriptor.digest, { start: 100, end: 200 })
    expect(part.status).toBe(206)
    expect(Buffer.from(await part.arrayBuffer()).equals(Buffer.from(big.bytes.subarray(100, 200)))).toBe(true)
  })

  it('refuses an upload whose source gives fewer bytes than the descriptor says', async () => {
    const b = blob('application/octet-stream', Buffer.alloc(500, 3))
    await expect(repo.uploadBlob(b.descriptor, () => chunks(b.bytes.subarray(0, 400)))).rejects.toThrow(/gave 400 bytes, the descriptor says 500/)
    expect(await repo.blobExists(b.descriptor.digest)).toBe(false)
  })

  it('puts and gets manifests by tag and digest', async () => {
    const img = makeImage({ seed: 'repo' })
    for (const b of [...img.layers, img.config]) await repo.uploadBlob(b.descriptor, () => chunks(b.bytes))
    expect(await repo.manifestExists('t1')).toBe(false)
    expect(await repo.putManifest('t1', img.manifest.bytes, MediaType.OciManifest)).toBe(img.manifest.descriptor.digest)
    expect(await repo.manifestExists('t1')).toBe(true)
    const byTag = await repo.getManifest('t1')
    expect(byTag.descriptor).toEqual({ mediaType: MediaType.OciManifest, digest: img.manifest.descriptor.digest, size: img.manifest.bytes.length })
    const byDigest = await repo.getManifest(img.manifest.descriptor.digest)
    expect(Buffer.from(byDigest.bytes).equals(Buffer.from(img.manifest.bytes))).toBe(true)
  })

  it('refuses a push of a manifest whose blobs are missing with a typed error', async () => {
    const img = makeImage({ seed: 'missing-blobs' })
    await expect(repo.putManifest('t2', img.manifest.bytes, MediaType.OciManifest)).rejects.toMatchObject({ code: 'ERR_REGISTRY_PROTOCOL', status: 400, message: expect.stringContaining('MANIFEST_BLOB_UNKNOWN') })
  })
})
