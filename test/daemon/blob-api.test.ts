/**
 * The daemon's blob API (what the FUSE manager's mounts read through), served by the real
 * control server on a unix socket, over sources the test controls.
 */
import { request } from 'node:http'
import { join } from 'node:path'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 as multihashSha256 } from 'multiformats/hashes/sha2'
import { afterEach, describe, expect, it } from 'vitest'
import { BlobReader, DEFAULTS } from '../../src/daemon/blob-api.js'
import { ControlServer } from '../../src/daemon/control.js'
import { ReadTimeoutError } from '../../src/ipfs/errors.js'
import { silentLogger } from '../../src/logging.js'
import type { RangeSource } from '../../src/source/types.js'
import { fixtureBytes } from '../../scripts/fixtures/tar.js'
import { removeDir, tempDir } from '../fs/helpers.js'

const logger = silentLogger()

const cidOf = async (seed: string): Promise<string> => CID.createV1(raw.code, await multihashSha256.digest(Buffer.from(seed))).toString()

interface Answer { status: number, type: string | undefined, body: Buffer }

async function get (socket: string, path: string, options: { method?: string, signal?: AbortSignal } = {}): Promise<Answer> {
  return await new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, path, method: options.method ?? 'GET', signal: options.signal }, (res) => {
      const parts: Buffer[] = []
      res.on('data', (b: Buffer) => parts.push(b))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], body: Buffer.concat(parts) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

/** The one error body: `{ error, code }`. */
const bodyOf = (a: Answer): { error: string, code: string } => JSON.parse(a.body.toString()) as { error: string, code: string }
const errorOf = (a: Answer): string => bodyOf(a).error

/** A source over bytes in memory that records its reads and whether it was closed. */
class Recorded implements RangeSource {
  readonly reads: Array<{ offset: number, length: number, background: boolean }> = []
  closed = 0
  constructor (readonly bytes: Buffer, private readonly fail?: (signal?: AbortSignal) => Promise<never>) {}
  async size (): Promise<number> { return this.bytes.length }
  async read (offset: number, length: number, signal?: AbortSignal, hint?: { background?: boolean }): Promise<Uint8Array> {
    this.reads.push({ offset, length, background: hint?.background === true })
    if (this.fail != null) return await this.fail(signal)
    return this.bytes.subarray(offset, offset + length)
  }

  async close (): Promise<void> { this.closed++ }
}

describe('BlobReader over the control socket', () => {
  let dir: string | undefined
  let server: ControlServer | undefined
  let reader: BlobReader | undefined

  afterEach(async () => {
    await server?.stop()
    await reader?.close()
    await removeDir(dir)
    server = undefined
    reader = undefined
    dir = undefined
  })

  /** Serves `sources` (by CID) through a BlobReader; `opened` counts openSource calls per CID. */
  async function serve (sources: Map<string, () => Promise<RangeSource>>, options: { maxOpenSources?: number } = {}): Promise<{ socket: string, opened: Map<string, number> }> {
    dir = await tempDir('blob-api')
    const opened = new Map<string, number>()
    reader = new BlobReader({
      logger,
      openSource: async (cid) => {
        opened.set(cid, (opened.get(cid) ?? 0) + 1)
        const open = sources.get(cid)
        if (open == null) throw Object.assign(new Error(`block ${cid} is not anywhere`), { code: 'ERR_BLOCK_NOT_FOUND' })
        return await open()
      }
    }, options)
    const socket = join(dir, 'api.sock')
    server = new ControlServer({ logger, blobs: reader, run: async () => 0 }, { address: socket, repo: dir })
    await server.start()
    return { socket, opened }
  }

  it('serves the size and byte ranges of a blob, passing a background hint on', async () => {
    const cid = await cidOf('a')
    const src = new Recorded(fixtureBytes(1, 300_000))
    const { socket } = await serve(new Map([[cid, async () => src]]))
    const size = await get(socket, `/v1/blobs/${cid}/size`)
    expect(size.status).toBe(200)
    expect(JSON.parse(size.body.toString())).toEqual({ size: 300_000 })
    const range = await get(socket, `/v1/blobs/${cid}?offset=1000&length=70000`)
    expect(range).toMatchObject({ status: 200, type: 'application/octet-stream' })
    expect(range.body.equals(src.bytes.subarray(1000, 71_000))).toBe(true)
    const past = await get(socket, `/v1/blobs/${cid}?offset=299990&length=100&priority=background`)
    expect(past.body.equals(src.bytes.subarray(299_990))).toBe(true)
    expect(src.reads).toEqual([{ offset: 1000, length: 70_000, background: false }, { offset: 299_990, length: 100, background: true }])
  })

  it('serves many ranges in one request (ranges=O:L,…): their bytes back to back, each cut at the end, with the priority passed on', async () => {
    const cid = await cidOf('m')
    const src = new Recorded(fixtureBytes(3, 300_000))
    const { socket } = await serve(new Map([[cid, async () => src]]))
    const many = await get(socket, `/v1/blobs/${cid}?ranges=5000:100,0:10,299990:100,400000:5&priority=background`)
    expect(many).toMatchObject({ status: 200, type: 'application/octet-stream' })
    expect(many.body.equals(Buffer.concat([src.bytes.subarray(5000, 5100), src.bytes.subarray(0, 10), src.bytes.subarray(299_990)]))).toBe(true)
    // started in the order named (a prefetch's order)
    expect(src.reads.map(r => [r.offset, r.background])).toEqual([[5000, true], [0, true], [299_990, true], [400_000, true]])
    const bad = [
      '', 'x', '1:2:3', '-1:5', '1.5:2', '1:2,', `0:${DEFAULTS.maxReadBytes + 1}`, `0:${DEFAULTS.maxReadBytes},0:1`,
      Array.from({ length: DEFAULTS.maxRanges + 1 }, (_, i) => `${i}:1`).join(',')
    ]
    for (const ranges of bad) {
      const a = await get(socket, `/v1/blobs/${cid}?ranges=${ranges}`)
      expect({ ranges: ranges.slice(0, 30), status: a.status }).toEqual({ ranges: ranges.slice(0, 30), status: 400 })
      expect(bodyOf(a).code).toBe('ERR_BAD_REQUEST')
    }
    expect(src.reads).toHaveLength(4)
  })

  it('reads a request\'s ranges a few at a time, in order; a failed one fails the answer and starts no more', async () => {
    const cid = await cidOf('n')
    let running = 0
    let most = 0
    const started: number[] = []
    const slow: RangeSource = {
      size: async () => 1 << 20,
      read: async (offset: number, length: number) => {
        started.push(offset)
        most = Math.max(most, ++running)
        await new Promise(resolve => setTimeout(resolve, 5))
        running--
        if (offset === 66) throw new Error('no such block anywhere')
        return new Uint8Array(length).fill(offset % 256)
      }
    }
    const { socket } = await serve(new Map([[cid, async () => slow]]))
    const ranges = Array.from({ length: 40 }, (_, i) => `${i}:2`).join(',')
    const ok = await get(socket, `/v1/blobs/${cid}?ranges=${ranges}&priority=prefetch`)
    expect(ok.status).toBe(200)
    expect([...ok.body]).toEqual(Array.from({ length: 40 }, (_, i) => [i, i]).flat())
    expect(started).toEqual(Array.from({ length: 40 }, (_, i) => i))
    expect(most).toBe(DEFAULTS.rangeConcurrency)
    started.length = 0
    const failed = await get(socket, `/v1/blobs/${cid}?ranges=${Array.from({ length: 100 }, (_, i) => `${i + 60}:1`).join(',')}`)
    expect(failed.status).toBe(502)
    expect(errorOf(failed)).toMatch(/no such block/)
    expect(started.length).toBeLessThan(100)
  })

  it('refuses a bad CID, a bad range and other methods and resources with a JSON error and its code, opening nothing', async () => {
    const cid = await cidOf('b')
    const { socket, opened } = await serve(new Map([[cid, async () => new Recorded(Buffer.alloc(10))]]))
    const cases: Array<[string, string, number, RegExp]> = [
      ['GET', '/v1/blobs/not-a-cid?offset=0&length=1', 400, /not a CID/],
      ['GET', '/v1/blobs/not-a-cid/size', 400, /not a CID/],
      ['GET', `/v1/blobs/${cid}?offset=-1&length=1`, 400, /offset and length/],
      ['GET', `/v1/blobs/${cid}?offset=0.5&length=1`, 400, /offset and length/],
      ['GET', `/v1/blobs/${cid}?offset=0&length=-1`, 400, /offset and length/],
      ['GET', `/v1/blobs/${cid}?offset=0&length=abc`, 400, /offset and length/],
      ['GET', `/v1/blobs/${cid}?offset=9007199254740992&length=1`, 400, /offset and length/],
      ['GET', `/v1/blobs/${cid}?offset=0&length=${DEFAULTS.maxReadBytes + 1}`, 400, new RegExp(`length ≤ ${DEFAULTS.maxReadBytes}`)],
      ['GET', `/v1/blobs/${cid}?offset=0&length=1&priority=urgent`, 400, /priority/],
      ['GET', `/v1/blobs/${cid}/stat`, 404, /unknown blob resource "stat"/],
      ['POST', `/v1/blobs/${cid}?offset=0&length=1`, 405, /only GET/],
      ['DELETE', `/v1/blobs/${cid}/size`, 405, /only GET/]
    ]
    for (const [method, path, status, message] of cases) {
      const a = await get(socket, path, { method })
      expect({ path, method, status: a.status, type: a.type }).toEqual({ path, method, status, type: 'application/json' })
      expect(errorOf(a), path).toMatch(message)
      // a malformed call is a bad request; no such resource or method is the control API's own refusal
      expect(bodyOf(a).code, path).toBe(status === 400 ? 'ERR_BAD_REQUEST' : 'ERR_CONTROL_API')
    }
    expect(opened.size).toBe(0)
    // the limit itself is allowed
    const atLimit = await get(socket, `/v1/blobs/${cid}?offset=0&length=${DEFAULTS.maxReadBytes}`)
    expect(atLimit.status).toBe(200)
    expect(atLimit.body.length).toBe(10)
  })

  it('a failed read answers 502, a read timeout 504, each with the error and its code in a JSON body', async () => {
    const [broken, slow, missing] = await Promise.all([cidOf('broken'), cidOf('slow'), cidOf('missing')])
    const { socket } = await serve(new Map<string, () => Promise<RangeSource>>([
      [broken, async () => new Recorded(Buffer.alloc(10), async () => { throw Object.assign(new Error('peer sent garbage'), { code: 'ERR_BLOCK_DIGEST_MISMATCH' }) })],
      [slow, async () => new Recorded(Buffer.alloc(10), async () => { throw new ReadTimeoutError('no block within 50 ms') })]
    ]))
    const a = await get(socket, `/v1/blobs/${broken}?offset=0&length=5`)
    expect({ status: a.status, type: a.type, body: bodyOf(a) }).toEqual({ status: 502, type: 'application/json', body: { error: 'peer sent garbage', code: 'ERR_BLOCK_DIGEST_MISMATCH' } })
    const b = await get(socket, `/v1/blobs/${slow}?offset=0&length=5`)
    expect({ status: b.status, type: b.type, body: bodyOf(b) }).toEqual({ status: 504, type: 'application/json', body: { error: 'no block within 50 ms', code: 'ERR_READ_TIMEOUT' } })
    // a source that cannot be opened fails the same way, for the size too
    const c = await get(socket, `/v1/blobs/${missing}/size`)
    expect({ status: c.status, body: bodyOf(c) }).toEqual({ status: 502, body: { error: `block ${missing} is not anywhere`, code: 'ERR_BLOCK_NOT_FOUND' } })
  })

  it('a client that hangs up aborts the read in the source', async () => {
    const cid = await cidOf('hang')
    let aborted: (reason: unknown) => void = () => {}
    const sawAbort = new Promise(resolve => { aborted = resolve })
    let started: () => void = () => {}
    const reading = new Promise<void>(resolve => { started = resolve })
    const src = new Recorded(Buffer.alloc(10), async (signal) => {
      started()
      return await new Promise<never>((_resolve, reject) => {
        signal?.addEventListener('abort', () => { aborted(signal.reason); reject(signal.reason) }, { once: true })
      })
    })
    const { socket } = await serve(new Map([[cid, async () => src]]))
    const ac = new AbortController()
    const pending = get(socket, `/v1/blobs/${cid}?offset=0&length=5`, { signal: ac.signal }).catch((e: Error) => e)
    await reading
    ac.abort()
    expect(await pending).toMatchObject({ name: 'AbortError' })
    await expect(Promise.race([sawAbort.then(() => 'aborted'), new Promise(resolve => setTimeout(() => resolve('still reading'), 5_000))])).resolves.toBe('aborted')
  })

  it('keeps sources open in LRU order: the least recently used is closed when one too many is open', async () => {
    const cids = await Promise.all(['l0', 'l1', 'l2', 'l3'].map(cidOf))
    const srcs = cids.map((_, i) => new Recorded(Buffer.alloc(100, i)))
    const { socket, opened } = await serve(new Map(cids.map((c, i) => [c, async () => srcs[i]])), { maxOpenSources: 2 })
    const read = async (i: number): Promise<void> => {
      const a = await get(socket, `/v1/blobs/${cids[i]}?offset=0&length=3`)
      expect(a.body).toEqual(Buffer.alloc(3, i))
    }
    await read(0)
    await read(1)
    await read(0) // 0 is now the most recently used
    expect(srcs.map(s => s.closed)).toEqual([0, 0, 0, 0])
    await read(2) // evicts 1, the least recently used
    await new Promise(resolve => setImmediate(resolve))
    expect(srcs.map(s => s.closed)).toEqual([0, 1, 0, 0])
    await read(0) // still open: not opened again
    expect(opened.get(cids[0])).toBe(1)
    await read(3) // evicts 2
    await new Promise(resolve => setImmediate(resolve))
    expect(srcs.map(s => s.closed)).toEqual([0, 1, 1, 0])
    await read(1) // opened anew, evicts 0
    expect(opened.get(cids[1])).toBe(2)
    await new Promise(resolve => setImmediate(resolve))
    expect(srcs.map(s => s.closed)).toEqual([1, 1, 1, 0])
    // close() closes what is still open, once
    await reader?.close()
    expect(srcs.map(s => s.closed)).toEqual([1, 2, 1, 1])
  })

  it('a source that failed to open is not kept: the next request opens it again', async () => {
    const cid = await cidOf('flaky')
    let fail = true
    const { socket, opened } = await serve(new Map([[cid, async () => {
      if (fail) throw new Error('no peer has it yet')
      return new Recorded(Buffer.from('found it'))
    }]]))
    const first = await get(socket, `/v1/blobs/${cid}?offset=0&length=8`)
    // an error without a code of its own answers the control API's
    expect({ status: first.status, body: bodyOf(first) }).toEqual({ status: 502, body: { error: 'no peer has it yet', code: 'ERR_CONTROL_API' } })
    fail = false
    const second = await get(socket, `/v1/blobs/${cid}?offset=0&length=8`)
    expect(second.body.toString()).toBe('found it')
    expect(opened.get(cid)).toBe(2)
  })
})
