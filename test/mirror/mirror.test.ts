import { execFileSync } from 'node:child_process'
import { createHash, randomInt } from 'node:crypto'
import { get as httpsGet } from 'node:https'
import { readFile, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { join } from 'node:path'
import { CarReader } from '@ipld/car/reader'
import { CID } from 'multiformats/cid'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { collectBlock, IndexStore, openRepo, UnixfsFileReader, verifyBlock, walkDag, type BlockGetter } from '../../src/ipfs/index.js'
import { silentLogger } from '../../src/logging.js'
import { credentialLine, MirrorOptionError, MirrorServer } from '../../src/mirror/index.js'
import { MediaType, openOciLayout, resolveImages, type Descriptor, type Index } from '../../src/oci/index.js'
import { mirrorFixture, startMirror, type MirrorFixture } from './helpers.js'

const logger = silentLogger()
const sha256 = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`

interface Answer { status: number, headers: Headers, body: Buffer }
async function get (url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Answer> {
  const res = await fetch(url, { method, headers })
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) }
}

describe('mirror: registry API and trustless gateway over a repo', () => {
  let fx: MirrorFixture
  let mirror: MirrorServer
  let base: string
  let name: string
  /** The converted blobs, by digest, as the layout publisher wrote them. */
  const blobs = new Map<string, Uint8Array>()
  let rootDesc: Descriptor
  let layers: Descriptor[]

  beforeAll(async () => {
    fx = await mirrorFixture()
    ;({ mirror } = await startMirror(fx, {}, logger))
    base = mirror.url
    name = `ipfs/${fx.root}`
    const layout = await openOciLayout(fx.layout)
    try {
      const r = await resolveImages(layout)
      rootDesc = r.root
      for (const d of [r.root, ...r.images.flatMap(i => [i.descriptor, i.manifest.config, ...i.layers])]) blobs.set(d.digest, await layout.fetchBytes(d))
      layers = r.images.flatMap(i => i.layers)
    } finally {
      await layout.close()
    }
  }, 120_000)

  afterAll(async () => {
    await mirror?.stop()
    await fx?.cleanup()
  })

  describe('OCI Distribution read API', () => {
    it('GET /v2/ answers 200 with the API version header', async () => {
      const r = await get(`${base}/v2/`)
      expect(r.status).toBe(200)
      expect(r.headers.get('docker-distribution-api-version')).toBe('registry/2.0')
    })

    it('serves the root index by tag and by digest, with its media type, digest and length; HEAD the same headers', async () => {
      for (const ref of ['latest', rootDesc.digest]) {
        const r = await get(`${base}/v2/${name}/manifests/${ref}`, { accept: MediaType.OciIndex })
        expect(r.status).toBe(200)
        expect(r.headers.get('content-type')).toBe(MediaType.OciIndex)
        expect(r.headers.get('docker-content-digest')).toBe(rootDesc.digest)
        expect(sha256(r.body)).toBe(rootDesc.digest)
        expect(Number(r.headers.get('content-length'))).toBe(r.body.length)
        const h = await get(`${base}/v2/${name}/manifests/${ref}`, {}, 'HEAD')
        expect(h.status).toBe(200)
        expect(h.body.length).toBe(0)
        expect(h.headers.get('docker-content-digest')).toBe(rootDesc.digest)
        expect(Number(h.headers.get('content-length'))).toBe(r.body.length)
      }
      // every platform manifest of the index, by digest
      const index = JSON.parse(blobs.get(rootDesc.digest)?.toString() ?? '') as Index
      expect(index.manifests).toHaveLength(2)
      for (const m of index.manifests) {
        const r = await get(`${base}/v2/${name}/manifests/${m.digest}`)
        expect(r.status).toBe(200)
        expect(r.headers.get('content-type')).toBe(MediaType.OciManifest)
        expect(sha256(r.body)).toBe(m.digest)
      }
    })

    it('serves every blob whole, equal to the source, with digest, length and Accept-Ranges', async () => {
      for (const [digest, bytes] of blobs) {
        const r = await get(`${base}/v2/${name}/blobs/${digest}`)
        expect(r.status, digest).toBe(200)
        expect(r.headers.get('docker-content-digest')).toBe(digest)
        expect(r.headers.get('accept-ranges')).toBe('bytes')
        expect(Number(r.headers.get('content-length'))).toBe(bytes.length)
        expect(Buffer.compare(r.body, Buffer.from(bytes))).toBe(0)
      }
    })

    it('answers Range with 206 and exactly those bytes at random offsets, the last byte, a suffix; 416 past the end', async () => {
      const layer = layers.reduce((a, b) => (a.size > b.size ? a : b))
      expect(layer.size).toBeGreaterThan(2 << 20) // spans several leaves
      const src = Buffer.from(blobs.get(layer.digest) as Uint8Array)
      const url = `${base}/v2/${name}/blobs/${layer.digest}`
      const ranges: Array<[number, number]> = [[0, 0], [src.length - 1, src.length - 1], [(1 << 20) - 3, (1 << 20) + 5]]
      for (let i = 0; i < 12; i++) {
        const a = randomInt(src.length)
        ranges.push([a, Math.min(src.length - 1, a + randomInt(3 << 20))])
      }
      for (const [a, b] of ranges) {
        const r = await get(url, { range: `bytes=${a}-${b}` })
        expect(r.status, `${a}-${b}`).toBe(206)
        expect(r.headers.get('content-range')).toBe(`bytes ${a}-${b}/${src.length}`)
        expect(Buffer.compare(r.body, src.subarray(a, b + 1)), `${a}-${b}`).toBe(0)
      }
      const open = await get(url, { range: `bytes=${src.length - 10}-` })
      expect(open.status).toBe(206)
      expect(Buffer.compare(open.body, src.subarray(src.length - 10))).toBe(0)
      const suffix = await get(url, { range: 'bytes=-7' })
      expect(Buffer.compare(suffix.body, src.subarray(src.length - 7))).toBe(0)
      const past = await get(url, { range: `bytes=${src.length}-` })
      expect(past.status).toBe(416)
      expect(past.headers.get('content-range')).toBe(`bytes */${src.length}`)
    })

    it('answers errors in the spec\'s JSON form with their codes', async () => {
      const expectError = async (path: string, status: number, code: string, method = 'GET'): Promise<void> => {
        const r = await get(`${base}${path}`, {}, method)
        expect(r.status, path).toBe(status)
        expect(r.headers.get('content-type')).toBe('application/json')
        const body = JSON.parse(r.body.toString()) as { errors: Array<{ code: string, message: string }> }
        expect(body.errors[0].code, path).toBe(code)
        expect(typeof body.errors[0].message).toBe('string')
      }
      const absent = `sha256:${'0'.repeat(64)}`
      await expectError(`/v2/${name}/manifests/nosuchtag`, 404, 'MANIFEST_UNKNOWN')
      await expectError(`/v2/${name}/manifests/${absent}`, 404, 'MANIFEST_UNKNOWN')
      // a layer is a blob, not a manifest
      await expectError(`/v2/${name}/manifests/${layers[0].digest}`, 404, 'MANIFEST_UNKNOWN')
      await expectError(`/v2/${name}/blobs/${absent}`, 404, 'BLOB_UNKNOWN')
      await expectError(`/v2/${name}/blobs/sha256:zz`, 400, 'DIGEST_INVALID')
      await expectError('/v2/nosuch/name/manifests/latest', 404, 'NAME_UNKNOWN')
      // a CID whose root block this node does not have
      await expectError('/v2/ipfs/bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy/manifests/latest', 404, 'NAME_UNKNOWN')
      await expectError('/v2/Bad_Name/manifests/latest', 400, 'NAME_INVALID')
      await expectError(`/v2/${name}/manifests/latest`, 405, 'UNSUPPORTED', 'PUT')
      await expectError(`/v2/${name}/blobs/uploads/`, 405, 'UNSUPPORTED', 'POST')
    })

    it('serves a friendly name given with tag, and forgets it when the tag goes', async () => {
      const index = fx.repo.index as IndexStore
      index.tags.set('library/demo', 'v1', fx.root)
      expect(index.images.get(fx.root)?.tags).toEqual(['library/demo:v1'])
      const r = await get(`${base}/v2/library/demo/manifests/v1`)
      expect(r.status).toBe(200)
      expect(r.headers.get('docker-content-digest')).toBe(rootDesc.digest)
      const layer = await get(`${base}/v2/library/demo/blobs/${layers[0].digest}`)
      expect(Buffer.compare(layer.body, Buffer.from(blobs.get(layers[0].digest) as Uint8Array))).toBe(0)
      expect((await get(`${base}/v2/library/demo/manifests/v2`)).status).toBe(404)
      expect(index.tags.delete('library/demo', 'v1')).toBe(true)
      const gone = await get(`${base}/v2/library/demo/manifests/v1`)
      expect(JSON.parse(gone.body.toString()).errors[0].code).toBe('NAME_UNKNOWN')
    })
  })

  describe('trustless gateway', () => {
    let leaf: CID
    let leafBytes: Uint8Array
    const getLocal: BlockGetter = async (c) => await collectBlock(fx.repo.node.localBlockstore.get(c))

    beforeAll(async () => {
      for await (const b of walkDag(CID.parse(fx.root), getLocal)) {
        if (b.cid.code === 0x55 && b.bytes != null && b.bytes.length > 1000) { leaf = b.cid; leafBytes = b.bytes; break }
      }
    })

    it('GET /ipfs/bafkqaaa is the health probe: 200', async () => {
      const r = await get(`${base}/ipfs/bafkqaaa`)
      expect(r.status).toBe(200)
      expect(r.body.length).toBe(0)
    })

    it('serves a raw block by format or Accept, with ETag, and 304 on If-None-Match', async () => {
      for (const [q, h] of [['?format=raw', {}], ['', { accept: 'application/vnd.ipld.raw' }], ['?format=raw', { accept: 'application/vnd.ipld.car' }]] as const) {
        const r = await get(`${base}/ipfs/${leaf.toString()}${q}`, h)
        expect(r.status).toBe(200)
        expect(r.headers.get('content-type')).toBe('application/vnd.ipld.raw')
        expect(Buffer.compare(r.body, Buffer.from(leafBytes))).toBe(0)
        verifyBlock(leaf, r.body)
        expect(r.headers.get('etag')).toBe(`"${leaf.toString()}.raw"`)
      }
      const again = await get(`${base}/ipfs/${leaf.toString()}?format=raw`, { 'if-none-match': `"${leaf.toString()}.raw"` })
      expect(again.status).toBe(304)
      expect((await get(`${base}/ipfs/${leaf.toString()}`)).status).toBe(400) // neither format nor Accept
      expect((await get(`${base}/ipfs/${leaf.toString()}?format=tar`)).status).toBe(400)
      expect((await get(`${base}/ipfs/notacid?format=raw`)).status).toBe(400)
      expect((await get(`${base}/ipfs/${fx.root}/index.json?format=car`)).status).toBe(400) // no paths
    })

    it('answers Range on a raw block with exactly those bytes; 416 past the end', async () => {
      const src = Buffer.from(leafBytes)
      const url = `${base}/ipfs/${leaf.toString()}?format=raw`
      for (const [a, b] of [[0, 0], [src.length - 1, src.length - 1], ...Array.from({ length: 8 }, () => { const a = randomInt(src.length); return [a, Math.min(src.length - 1, a + randomInt(5000))] })]) {
        const r = await get(url, { range: `bytes=${a}-${b}` })
        expect(r.status).toBe(206)
        expect(r.headers.get('content-range')).toBe(`bytes ${a}-${b}/${src.length}`)
        expect(Buffer.compare(r.body, src.subarray(a, b + 1))).toBe(0)
      }
      const past = await get(url, { range: `bytes=${src.length}-${src.length + 5}` })
      expect(past.status).toBe(416)
      expect(past.headers.get('content-range')).toBe(`bytes */${src.length}`)
    })

    it('answers 404 only when the root block is missing', async () => {
      const absent = 'bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy'
      expect((await get(`${base}/ipfs/${absent}?format=raw`)).status).toBe(404)
      expect((await get(`${base}/ipfs/${absent}?format=car`)).status).toBe(404)
      expect((await get(`${base}/ipfs/${absent}?format=raw`, {}, 'HEAD')).status).toBe(404)
    })

    /** The blocks of a CAR answer, each checked against its CID, in order. */
    async function carBlocks (url: string, headers: Record<string, string> = {}): Promise<{ roots: CID[], blocks: Array<{ cid: CID, bytes: Uint8Array }>, type: string | null }> {
      const r = await get(url, headers)
      expect(r.status).toBe(200)
      const reader = await CarReader.fromBytes(r.body)
      const blocks: Array<{ cid: CID, bytes: Uint8Array }> = []
      for await (const b of reader.blocks()) { verifyBlock(b.cid, b.bytes); blocks.push(b) }
      return { roots: await reader.getRoots(), blocks, type: r.headers.get('content-type') }
    }

    it('CAR, dag-scope=all: the whole image DAG, every block once, each verifying, root first', async () => {
      const root = CID.parse(fx.root)
      const car = await carBlocks(`${base}/ipfs/${fx.root}?format=car`)
      expect(car.type).toBe('application/vnd.ipld.car; version=1; order=dfs; dups=n')
      expect(car.roots.map(String)).toEqual([fx.root])
      const expected: string[] = []
      for await (const b of walkDag(root, getLocal)) expected.push(b.cid.toString())
      expect(car.blocks.map(b => b.cid.toString())).toEqual(expected)
      // Accept works as well as format=
      const byAccept = await carBlocks(`${base}/ipfs/${fx.root}`, { accept: 'application/vnd.ipld.car; version=1' })
      expect(byAccept.blocks).toHaveLength(expected.length)
    })

    it('CAR, dag-scope=block and entity; entity-bytes returns only the blocks of the range, which read back as the source bytes', async () => {
      const layer = layers.reduce((a, b) => (a.size > b.size ? a : b))
      const layerCid = fx.repo.index.digests.get(layer.digest) as CID
      const src = Buffer.from(blobs.get(layer.digest) as Uint8Array)
      const block = await carBlocks(`${base}/ipfs/${layerCid.toString()}?format=car&dag-scope=block`)
      expect(block.blocks.map(b => b.cid.toString())).toEqual([layerCid.toString()])
      const entity = await carBlocks(`${base}/ipfs/${layerCid.toString()}?format=car&dag-scope=entity`)
      const all: string[] = []
      for await (const b of walkDag(layerCid, getLocal)) all.push(b.cid.toString())
      expect(entity.blocks.map(b => b.cid.toString())).toEqual(all)
      // a directory's entity is its own block
      const dir = await carBlocks(`${base}/ipfs/${fx.root}?format=car&dag-scope=entity`)
      expect(dir.blocks).toHaveLength(1)

      for (const [from, to, a, b] of [
        [1_500_000, 1_600_000, 1_500_000, 1_600_000],
        [-1000, '*', src.length - 1000, src.length - 1],
        [0, 10, 0, 10]
      ] as Array<[number, number | string, number, number]>) {
        const part = await carBlocks(`${base}/ipfs/${layerCid.toString()}?format=car&entity-bytes=${from}:${to}`)
        expect(part.blocks.length).toBeLessThan(all.length)
        const have = new Map(part.blocks.map(x => [x.cid.toString(), x.bytes]))
        const fromCar: BlockGetter = async (c) => {
          const bytes = have.get(c.toString())
          if (bytes == null) throw new Error(`block ${c.toString()} not in the CAR`)
          return bytes
        }
        const reader = await UnixfsFileReader.open(layerCid, fromCar)
        expect(Buffer.compare(Buffer.from(await reader.read(a, b - a + 1)), src.subarray(a, b + 1)), `${from}:${to}`).toBe(0)
      }
      // past the end: as dag-scope=block
      const outside = await carBlocks(`${base}/ipfs/${layerCid.toString()}?format=car&entity-bytes=${src.length + 10}:*`)
      expect(outside.blocks).toHaveLength(1)
    })

    it('is the last stage of another node\'s fetch path ([ipfs] gateways): that node reads a layer from it, every block checked', async () => {
      const { mkdir } = await import('node:fs/promises')
      await mkdir(join(fx.dir, 'c'), { recursive: true })
      const c = await openRepo({ logger }, { repo: join(fx.dir, 'c'), gateways: [base] })
      try {
        const layer = layers.reduce((a, b) => (a.size > b.size ? a : b))
        const cid = fx.repo.index.digests.get(layer.digest) as CID
        const reader = await UnixfsFileReader.open(cid, async (x) => await collectBlock(c.node.blocks.get(x)))
        const bytes = await reader.read(0, reader.size)
        expect(sha256(bytes)).toBe(layer.digest)
        expect(c.node.fetchStats().gatewayBlocks).toBeGreaterThan(1)
      } finally {
        await c.close()
      }
    })

    it('a CAR whose DAG lacks a block is cut short (a transfer error), never a complete-looking CAR', async () => {
      // a file of its own, then one of its leaves deleted from the blockstore
      const { importBytes } = await import('../../src/ipfs/index.js')
      const { cid } = await importBytes(fx.repo.node.localBlockstore, Buffer.alloc(3 << 20, 7).map((_, i) => i % 251))
      let victim: CID | undefined
      for await (const b of walkDag(cid, getLocal)) if (b.cid.code === 0x55) victim = b.cid
      await fx.repo.node.localBlockstore.delete(victim as CID)
      await expect(fetch(`${base}/ipfs/${cid.toString()}?format=car`).then(async r => await r.arrayBuffer())).rejects.toThrow()
    })
  })

  describe('listener', () => {
    it('refuses a non-loopback address unless public, and half a TLS pair', () => {
      const components = { logger, blocks: fx.repo.node.blocks, localBlockstore: fx.repo.node.localBlockstore, index: fx.repo.index }
      expect(() => new MirrorServer(components, { address: '0.0.0.0:5380' })).toThrow(MirrorOptionError)
      expect(() => new MirrorServer(components, { address: '0.0.0.0:5380', public: true })).not.toThrow()
      expect(() => new MirrorServer(components, { address: '127.0.0.1:5380', tlsCert: '/x' })).toThrow(MirrorOptionError)
      expect(() => new MirrorServer(components, { address: '127.0.0.1:5380', maxStreams: 0 })).toThrow(MirrorOptionError)
    })

    it('with credentials: 401 UNAUTHORIZED without or with wrong ones, 200 with the right ones', async () => {
      const file = join(fx.dir, 'credentials')
      await writeFile(file, `# users\n${await credentialLine('alice', 's3cret')}\n`, { mode: 0o600 })
      const m = new MirrorServer({ logger, blocks: fx.repo.node.blocks, localBlockstore: fx.repo.node.localBlockstore, index: fx.repo.index }, { address: '127.0.0.1:0', credentials: file })
      await m.start()
      try {
        const basic = (u: string, p: string): string => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`
        const none = await get(`${m.url}/v2/`)
        expect(none.status).toBe(401)
        expect(none.headers.get('www-authenticate')).toMatch(/^Basic realm=/)
        expect(JSON.parse(none.body.toString()).errors[0].code).toBe('UNAUTHORIZED')
        expect((await get(`${m.url}/v2/`, { authorization: basic('alice', 'wrong') })).status).toBe(401)
        expect((await get(`${m.url}/v2/`, { authorization: basic('bob', 's3cret') })).status).toBe(401)
        expect((await get(`${m.url}/ipfs/bafkqaaa`)).status).toBe(401)
        expect((await get(`${m.url}/v2/`, { authorization: basic('alice', 's3cret') })).status).toBe(200)
        expect((await get(`${m.url}/v2/${name}/manifests/latest`, { authorization: basic('alice', 's3cret') })).status).toBe(200)
      } finally {
        await m.stop()
      }
    })

    it('with tls_cert and tls_key: HTTPS only (a client that trusts the certificate gets 200; plain HTTP gets no answer)', async () => {
      const cert = join(fx.dir, 'cert.pem')
      const key = join(fx.dir, 'key.pem')
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'ignore' })
      const m = new MirrorServer({ logger, blocks: fx.repo.node.blocks, localBlockstore: fx.repo.node.localBlockstore, index: fx.repo.index }, { address: '127.0.0.1:0', tlsCert: cert, tlsKey: key })
      await m.start()
      try {
        expect(m.url).toMatch(/^https:/)
        const ca = await readFile(cert)
        const status = await new Promise<number>((resolve, reject) => {
          httpsGet(`${m.url}/v2/${name}/manifests/latest`, { ca }, (res) => { res.resume(); resolve(res.statusCode ?? 0) }).on('error', reject)
        })
        expect(status).toBe(200)
        await expect(fetch(m.url.replace('https:', 'http:') + '/v2/')).rejects.toThrow()
      } finally {
        await m.stop()
      }
    })

    it('cuts a client that sends its headers too slowly (headers timeout)', async () => {
      const m = new MirrorServer({ logger, blocks: fx.repo.node.blocks, localBlockstore: fx.repo.node.localBlockstore, index: fx.repo.index }, { address: '127.0.0.1:0', headersTimeoutMs: 500, requestTimeoutMs: 1000, timeoutCheckIntervalMs: 100 })
      await m.start()
      try {
        const { port } = new URL(m.url)
        const started = Date.now()
        await new Promise<void>((resolve, reject) => {
          const s = connect(Number(port), '127.0.0.1', () => { s.write('GET /v2/ HTTP/1.1\r\nHost: x\r\n') })
          s.on('data', () => {})
          s.on('close', () => { resolve() })
          s.on('error', reject)
          setTimeout(() => { s.destroy(); reject(new Error('not cut')) }, 5000)
        })
        expect(Date.now() - started).toBeLessThan(3000)
      } finally {
        await m.stop()
      }
    })

    it('refuses requests beyond max_streams at once with 429 TOOMANYREQUESTS, and keeps serving', async () => {
      let release: () => void = () => {}
      const held = new Promise<void>(resolve => { release = resolve })
      // a fetch path that holds every block until released: the first blob request stays in flight
      const blocks = {
        get: async function * (cid: CID, o?: { signal?: AbortSignal }) {
          await held
          yield * fx.repo.node.blocks.get(cid, o) as AsyncIterable<Uint8Array>
        }
      }
      const m = new MirrorServer({ logger, blocks, localBlockstore: fx.repo.node.localBlockstore, index: fx.repo.index }, { address: '127.0.0.1:0', maxStreams: 1 })
      await m.start()
      try {
        const first = get(`${m.url}/v2/${name}/manifests/latest`)
        await new Promise(resolve => setTimeout(resolve, 200))
        const second = await get(`${m.url}/v2/`)
        expect(second.status).toBe(429)
        expect(m.stats().refused).toBe(1)
        expect(JSON.parse(second.body.toString()).errors[0].code).toBe('TOOMANYREQUESTS')
        release()
        expect((await first).status).toBe(200)
        expect((await get(`${m.url}/v2/`)).status).toBe(200)
      } finally {
        release()
        await m.stop()
      }
    })
  })

  it('keeps the image listed with its CIDs (sanity of the fixture)', async () => {
    expect(fx.repo.index.images.get(fx.root)).toBeDefined()
    expect(await readFile(join(fx.layout, 'index.json'), 'utf8')).toContain('schemaVersion')
  })
})
