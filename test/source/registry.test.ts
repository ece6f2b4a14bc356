/**
 * RegistryBlobSource against a real registry: the RangeSource contract (short read only at the
 * end, empty at/after the end, zero length, concurrent reads, AbortError), Range requests through
 * redirects, re-authentication on 401.
 */
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseImageReference, type RegistryReference } from '../../src/oci/reference.js'
import { RegistryClient } from '../../src/oci/registry/client.js'
import { pushImage } from '../../src/oci/registry/push.js'
import { Repository } from '../../src/oci/registry/repository.js'
import { RegistryBlobSource } from '../../src/source/registry.js'
import { rangeSourceSuite } from './suite.js'
import { hasCommand, needs } from '../helpers/env.js'
import { jsonBlob, makeImage } from '../../scripts/fixtures/oci-image.js'
import { sha256 } from '../../scripts/fixtures/digest.js'
import { startFront, type Front } from '../oci/front.js'
import { REGISTRY_BIN, startRegistry, type TestRegistry } from '../../scripts/fixtures/registry.js'

const CREDS = { username: 'alice', password: 's3cret' }

/** Byte equality without vitest's element-wise deep diff (slow on megabytes). */
function expectBytes (got: Uint8Array, want: Uint8Array): void {
  expect(got.length).toBe(want.length)
  expect(Buffer.from(got).equals(want)).toBe(true)
}

describe.skipIf(needs({ 'docker-registry': hasCommand(REGISTRY_BIN) }))('RegistryBlobSource', () => {
  let reg: TestRegistry
  let bearer: Front
  let redirecting: Front
  let hanging: Front
  const data = randomBytes(3 * 1024 * 1024 + 17)
  const digest = sha256(data)

  beforeAll(async () => {
    reg = await startRegistry()
    const img = makeImage({ seed: 'range' })
    // The random blob rides along as an extra "layer" of a pushed image.
    await pushImage(parseImageReference(`docker://${reg.host}/test/range:1`) as RegistryReference, {
      blobs: [{ descriptor: { mediaType: 'application/octet-stream', digest, size: data.length }, open: async function * () { yield data } },
        ...[img.config, ...img.layers].map(b => ({ descriptor: b.descriptor, open: async function * () { yield b.bytes } }))],
      manifests: [jsonBlob(img.manifest.descriptor.mediaType, img.manifest.json)]
    }, { plainHttp: true, dockerConfig: false })
    bearer = await startFront({ upstream: reg.host, auth: 'bearer' })
    redirecting = await startFront({ upstream: reg.host, redirectBlobs: true })
    hanging = await startFront({ upstream: reg.host, fail: req => req.method === 'GET' ? 'hang' : undefined })
  })
  afterAll(async () => {
    await Promise.all([bearer?.stop(), redirecting?.stop(), hanging?.stop()])
    await reg?.stop()
  })

  const open = (host: string, opts: { size?: number, credentials?: typeof CREDS } = {}): RegistryBlobSource =>
    new RegistryBlobSource(new RegistryClient(host, { plainHttp: true, dockerConfig: false, credentials: opts.credentials, retryDelayMs: 5 }), 'test/range', digest, { size: opts.size })

  it('reports the size by HEAD', async () => {
    const s = open(reg.host)
    expect(await s.size()).toBe(data.length)
  })

  it('reads ranges that equal the bytes written', async () => {
    const s = open(reg.host)
    for (const [off, len] of [[0, 1], [0, 4096], [1, 100_000], [1_048_575, 2_000_001], [data.length - 10, 10]]) {
      expectBytes(await s.read(off, len), data.subarray(off, off + len))
    }
  })

  it('returns a short read only at the end, and empty at or past the end', async () => {
    const s = open(reg.host, { size: data.length })
    expectBytes(await s.read(data.length - 5, 100), data.subarray(data.length - 5))
    expect((await s.read(data.length, 10)).length).toBe(0)
    expect((await s.read(data.length + 1000, 10)).length).toBe(0)
    expect((await s.read(5, 0)).length).toBe(0)
    await expect(s.read(-1, 5)).rejects.toThrow(RangeError)
  })

  it('serves concurrent reads', async () => {
    const s = open(reg.host)
    const ranges = Array.from({ length: 24 }, (_, i) => [i * 131_071, 65_536 + i] as const)
    const got = await Promise.all(ranges.map(async ([o, l]) => await s.read(o, l)))
    got.forEach((g, i) => { expectBytes(g, data.subarray(ranges[i][0], ranges[i][0] + ranges[i][1])) })
  })

  it('rejects with an AbortError when the signal aborts', async () => {
    const s = open(hanging.host, { size: data.length })
    const ctl = new AbortController()
    const pending = s.read(0, 10, ctl.signal)
    setTimeout(() => { ctl.abort() }, 20)
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' })
    const pre = new AbortController()
    pre.abort()
    await expect(open(reg.host).read(0, 10, pre.signal)).rejects.toMatchObject({ name: 'AbortError' })
  })

  it('follows redirects with the Range header', async () => {
    const s = open(redirecting.host, { size: data.length })
    expectBytes(await s.read(2_000_000, 1234), data.subarray(2_000_000, 2_001_234))
    expect(redirecting.log.some(l => l.includes(digest))).toBe(true)
  })

  it('authenticates with a token and re-authenticates on 401', async () => {
    const s = open(bearer.host, { credentials: CREDS })
    expectBytes(await s.read(10, 10), data.subarray(10, 20))
    const issued = bearer.tokensIssued
    bearer.expireTokens()
    expectBytes(await s.read(30, 10), data.subarray(30, 40))
    expect(bearer.tokensIssued).toBe(issued + 1)
  })

  it('fails with typed errors for a missing blob and after close', async () => {
    const s = new RegistryBlobSource(new RegistryClient(reg.host, { plainHttp: true, dockerConfig: false }), 'test/range', sha256(Buffer.from('none')))
    await expect(s.size()).rejects.toMatchObject({ code: 'ERR_REGISTRY_NOT_FOUND', message: expect.stringContaining('test/range') })
    const t = open(reg.host)
    await t.close()
    await expect(t.read(0, 1)).rejects.toMatchObject({ code: 'ERR_CLOSED' })
  })
})

/** Starts a registry (optionally behind a front), uploads `data` as a blob, opens the source on it. */
async function blobFixture (data: Uint8Array, front?: { auth: 'bearer', redirectBlobs: boolean }): Promise<{ source: RegistryBlobSource, cleanup: () => Promise<void> }> {
  const reg = await startRegistry()
  let f: Front | undefined
  try {
    const digest = sha256(data)
    await new Repository(new RegistryClient(reg.host, { plainHttp: true, dockerConfig: false }), 'suite/blob')
      .uploadBlob({ mediaType: 'application/octet-stream', digest, size: data.length }, async function * () { yield data })
    if (front != null) f = await startFront({ upstream: reg.host, ...front })
    const client = new RegistryClient(f?.host ?? reg.host, { plainHttp: true, dockerConfig: false, credentials: f != null ? CREDS : undefined })
    const source = new RegistryBlobSource(client, 'suite/blob', digest)
    return { source, cleanup: async () => { await source.close(); await f?.stop(); await reg.stop() } }
  } catch (err) {
    await f?.stop()
    await reg.stop()
    throw err
  }
}

describe.skipIf(needs({ 'docker-registry': hasCommand(REGISTRY_BIN) }))('RegistryBlobSource shared suite', () => {
  rangeSourceSuite('RegistryBlobSource', async data => await blobFixture(data))
  rangeSourceSuite('RegistryBlobSource (bearer auth, blobs redirected)', async data => await blobFixture(data, { auth: 'bearer', redirectBlobs: true }))
})
