/**
 * The registry client against the real registry behind a test front that demands Basic or
 * Bearer auth (with its own token endpoint) or injects 500s and dropped connections.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { openImageReader, type OpenReaderOptions } from '../../../src/oci/open.js'
import { parseImageReference, type RegistryReference } from '../../../src/oci/reference.js'
import { pushImage, type PushImage } from '../../../src/oci/registry/push.js'
import { resolveImages } from '../../../src/oci/resolve.js'
import { hasCommand, needs } from '../../helpers/env.js'
import { makeImage, type TestImage } from '../../../scripts/fixtures/oci-image.js'
import { sha256 } from '../../../scripts/fixtures/digest.js'
import { startFront, type Front, type FrontOptions } from '../front.js'
import { REGISTRY_BIN, startRegistry, type TestRegistry } from '../../../scripts/fixtures/registry.js'

const CREDS = { username: 'alice', password: 's3cret' }

function toPush (img: TestImage): PushImage {
  return {
    blobs: [...img.layers, img.config].map(b => ({ descriptor: b.descriptor, open: async function * () { yield b.bytes } })),
    manifests: [{ descriptor: img.manifest.descriptor, bytes: img.manifest.bytes }]
  }
}

async function pullAll (reference: string, options: OpenReaderOptions): Promise<string[]> {
  const src = await openImageReader(reference, { plainHttp: true, dockerConfig: false, retryDelayMs: 5, ...options })
  try {
    const r = await resolveImages(src)
    const out: string[] = []
    for (const d of [r.images[0].manifest.config, ...r.images[0].layers]) out.push(sha256(await src.fetchBytes(d)))
    return out
  } finally { await src.close() }
}

describe.skipIf(needs({ 'docker-registry': hasCommand(REGISTRY_BIN) }))('RegistryClient auth and failures', () => {
  let reg: TestRegistry
  let tmp: string
  let front: Front | undefined
  const img = makeImage({ seed: 'client', layerSize: 200_000 })
  const expected = [img.config.descriptor.digest, ...img.layers.map(l => l.descriptor.digest)]

  const withFront = async (o: Omit<FrontOptions, 'upstream'>): Promise<Front> => {
    front = await startFront({ upstream: reg.host, ...o })
    return front
  }

  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'oci-client-test-'))
    reg = await startRegistry()
    await pushImage(parseImageReference(`docker://${reg.host}/test/img:1`) as RegistryReference, toPush(img), { plainHttp: true, dockerConfig: false })
  })
  afterEach(async () => {
    await front?.stop()
    front = undefined
  })
  afterAll(async () => {
    await reg?.stop()
    await rm(tmp, { recursive: true, force: true })
  })

  describe('Basic auth', () => {
    it('pulls and pushes with credentials', async () => {
      const f = await withFront({ auth: 'basic' })
      expect(await pullAll(`docker://${f.host}/test/img:1`, { credentials: CREDS })).toEqual(expected)
      const other = makeImage({ seed: 'basic-push' })
      await pushImage(parseImageReference(`docker://${f.host}/test/basic:1`) as RegistryReference, toPush(other), { plainHttp: true, credentials: CREDS, dockerConfig: false })
      expect(await pullAll(`docker://${reg.host}/test/basic:1`, {})).toEqual([other.config.descriptor.digest, ...other.layers.map(l => l.descriptor.digest)])
    })

    it('fails with a typed 401 without or with wrong credentials', async () => {
      const f = await withFront({ auth: 'basic' })
      await expect(pullAll(`docker://${f.host}/test/img:1`, {})).rejects.toMatchObject({ code: 'ERR_REGISTRY_UNAUTHORIZED', message: expect.stringContaining('no credentials') })
      const err = await pullAll(`docker://${f.host}/test/img:1`, { credentials: { username: 'alice', password: 'nope' } }).catch(e => e)
      expect(err).toMatchObject({ code: 'ERR_REGISTRY_UNAUTHORIZED', status: 401 })
      expect(err.message).toContain('manifest 1 in')
    })

    it('takes credentials from a Docker config file', async () => {
      const f = await withFront({ auth: 'basic' })
      const file = join(tmp, 'docker-config.json')
      await writeFile(file, JSON.stringify({ auths: { [f.host]: { auth: Buffer.from('alice:s3cret').toString('base64') } } }))
      expect(await pullAll(`docker://${f.host}/test/img:1`, { dockerConfig: file })).toEqual(expected)
    })
  })

  describe('Bearer tokens', () => {
    it('runs the token flow with credentials for pull and push scopes', async () => {
      const f = await withFront({ auth: 'bearer' })
      expect(await pullAll(`docker://${f.host}/test/img:1`, { credentials: CREDS })).toEqual(expected)
      const issued = f.tokensIssued
      expect(issued).toBeGreaterThanOrEqual(1)
      const other = makeImage({ seed: 'bearer-push' })
      const res = await pushImage(parseImageReference(`docker://${f.host}/test/bearer:1`) as RegistryReference, toPush(other), { plainHttp: true, credentials: CREDS, dockerConfig: false })
      expect(res.digest).toBe(other.manifest.descriptor.digest)
      expect(f.tokensIssued).toBeGreaterThan(issued)
      expect(f.log.filter(l => l.startsWith('GET /token')).some(l => l.includes('pull%2Cpush'))).toBe(true)
    })

    it('gets anonymous pull tokens, and a typed 401 when anonymous push is refused', async () => {
      const f = await withFront({ auth: 'bearer', anonymousPull: true })
      expect(await pullAll(`docker://${f.host}/test/img:1`, {})).toEqual(expected)
      const err = await pushImage(parseImageReference(`docker://${f.host}/test/anon:1`) as RegistryReference, toPush(makeImage({ seed: 'anon' })), { plainHttp: true, dockerConfig: false }).catch(e => e)
      expect(err).toMatchObject({ code: 'ERR_REGISTRY_UNAUTHORIZED' })
      expect(err.message).toMatch(/token endpoint refused anonymous access for repository:test\/anon:pull,push/)
    })

    it('re-authenticates when a token expires', async () => {
      const f = await withFront({ auth: 'bearer' })
      const src = await openImageReader(`docker://${f.host}/test/img:1`, { plainHttp: true, credentials: CREDS, dockerConfig: false })
      const r = await resolveImages(src)
      const before = f.tokensIssued
      f.expireTokens()
      expect(sha256(await src.fetchBytes(r.images[0].layers[1]))).toBe(img.layers[1].descriptor.digest)
      expect(f.tokensIssued).toBe(before + 1)
      await src.close()
    })
  })

  describe('failures', () => {
    it('retries 500s and succeeds', async () => {
      let failures = 0
      const f = await withFront({ fail: req => req.url?.includes('/blobs/') === true && failures++ < 2 ? 500 : undefined })
      expect(await pullAll(`docker://${f.host}/test/img:1`, {})).toEqual(expected)
      expect(failures).toBeGreaterThan(2)
    })

    it('gives a typed error naming repo and blob after bounded retries on 500', async () => {
      const f = await withFront({ fail: req => req.url?.includes('/blobs/') === true ? 500 : undefined })
      const err = await pullAll(`docker://${f.host}/test/img:1`, { retries: 2 }).catch(e => e)
      expect(err).toMatchObject({ code: 'ERR_REGISTRY_SERVER', status: 500 })
      expect(err.message).toContain(`blob ${img.config.descriptor.digest} in ${f.host}/test/img`)
      expect(err.message).toContain('injected 500')
      expect(f.log.filter(l => l.includes(img.config.descriptor.digest))).toHaveLength(3)
    })

    it('pushes through intermittent 500s and dropped connections on uploads', async () => {
      let n = 0
      const f = await withFront({ fail: req => (req.method === 'PUT' || req.method === 'POST') && n++ % 2 === 0 ? (n % 4 === 1 ? 500 : 'drop') : undefined })
      const other = makeImage({ seed: 'flaky-push' })
      const res = await pushImage(parseImageReference(`docker://${f.host}/test/flaky:1`) as RegistryReference, toPush(other), { plainHttp: true, dockerConfig: false, retryDelayMs: 5 })
      expect(res.digest).toBe(other.manifest.descriptor.digest)
      expect(await pullAll(`docker://${reg.host}/test/flaky:1`, {})).toEqual([other.config.descriptor.digest, ...other.layers.map(l => l.descriptor.digest)])
    })

    it('fails a push whose manifest PUT keeps failing with a typed error naming the tag', async () => {
      const f = await withFront({ fail: req => req.method === 'PUT' && req.url?.includes('/manifests/') === true ? 500 : undefined })
      const other = makeImage({ seed: 'no-manifest' })
      const err = await pushImage(parseImageReference(`docker://${f.host}/test/nomanifest:1`) as RegistryReference, toPush(other), { plainHttp: true, dockerConfig: false, retryDelayMs: 5, retries: 1 }).catch(e => e)
      expect(err).toMatchObject({ code: 'ERR_REGISTRY_SERVER', message: expect.stringContaining(`PUT manifest 1 in ${f.host}/test/nomanifest`) })
      await expect(pullAll(`docker://${reg.host}/test/nomanifest:1`, { retries: 0 })).rejects.toMatchObject({ code: 'ERR_REGISTRY_NOT_FOUND' })
    })

    it('maps 404 and 403 to typed errors', async () => {
      const f = await withFront({ fail: req => req.url?.includes('/manifests/forbidden') === true ? 403 : undefined })
      const missing = await pullAll(`docker://${f.host}/test/img:nope`, {}).catch(e => e)
      expect(missing).toMatchObject({ code: 'ERR_REGISTRY_NOT_FOUND', status: 404 })
      expect(missing.message).toContain(`manifest nope in ${f.host}/test/img`)
      expect(missing.message).toContain('MANIFEST_UNKNOWN')
      await expect(pullAll(`docker://${f.host}/test/img:forbidden`, {})).rejects.toMatchObject({ code: 'ERR_REGISTRY_DENIED' })
    })

    it('retries dropped connections, then gives a typed connection error', async () => {
      let drops = 0
      const f = await withFront({ fail: req => req.url?.includes('/manifests/') === true && drops++ < 1 ? 'drop' : undefined })
      expect(await pullAll(`docker://${f.host}/test/img:1`, {})).toEqual(expected)
      await f.stop()
      const f2 = await withFront({ fail: () => 'drop' })
      const err = await pullAll(`docker://${f2.host}/test/img:1`, { retries: 1 }).catch(e => e)
      expect(err).toMatchObject({ code: 'ERR_REGISTRY_CONNECTION', status: 0 })
      expect(err.message).toContain(`manifest 1 in ${f2.host}/test/img`)
    })

    it('resumes a blob download whose connection drops mid-body', async () => {
      let drops = 0
      const big = img.layers[1].descriptor.digest
      const f = await withFront({ fail: req => req.url?.includes(big) === true && req.method === 'GET' && drops++ < 1 ? 'drop-mid-body' : undefined })
      expect(await pullAll(`docker://${f.host}/test/img:1`, {})).toEqual(expected)
      expect(drops).toBe(2)
    })

    it('follows blob redirects to another origin without sending credentials there', async () => {
      const storage = await startFront({ upstream: reg.host })
      try {
        const f = await withFront({ auth: 'bearer', redirectBlobs: true, redirectTo: storage.url })
        expect(await pullAll(`docker://${f.host}/test/img:1`, { credentials: CREDS })).toEqual(expected)
        const blobGets = storage.log.filter(l => l.startsWith('GET /v2/test/img/blobs/'))
        expect(new Set(blobGets).size).toBe(3) // the config is read twice: by resolveImages and by pullAll
        expect(blobGets.some(l => l.endsWith('[auth]'))).toBe(false)
        expect(f.log.filter(l => l.includes('/blobs/')).every(l => l.endsWith('[auth]'))).toBe(true)
      } finally { await storage.stop() }
    })

    it('fails the connection to a port nobody listens on with a typed error', async () => {
      const f = await withFront({})
      const host = f.host
      await f.stop()
      front = undefined
      await expect(pullAll(`docker://${host}/test/img:1`, { retries: 1 })).rejects.toMatchObject({ code: 'ERR_REGISTRY_CONNECTION' })
    })
  })
})
