import { writeFile } from 'node:fs/promises'
import { request } from 'node:http'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { describe, expect, it } from 'vitest'
import { BlobReader } from '../../src/daemon/blob-api.js'
import { ControlServer } from '../../src/daemon/control.js'
import { BlobClient, BlobReadError, BlobSourceUnavailableError } from '../../src/fusemgr/index.js'
import { ReadTimeoutError } from '../../src/ipfs/errors.js'
import { silentLogger } from '../../src/logging.js'
import { FileSource } from '../../src/source/file.js'
import { removeDir, tempDir } from '../fs/helpers.js'
import { until } from '../ipfs/helpers.js'
import { rangeSourceSuite } from '../source/suite.js'

const logger = silentLogger()

async function serve (dir: string, files: Map<string, string>): Promise<ControlServer> {
  const blobs = new BlobReader({
    logger,
    openSource: async (cid) => {
      const path = files.get(cid)
      if (path == null) throw new Error(`no blob ${cid}`)
      return await FileSource.open(path)
    }
  })
  const server = new ControlServer({ logger, blobs, run: async () => 0 }, { address: join(dir, 'api.sock'), repo: dir })
  await server.start()
  return server
}

const cidOf = async (b: Uint8Array): Promise<string> => CID.createV1(raw.code, await sha256.digest(b)).toString()

// The FUSE manager's source: the daemon's blob API (control socket) over a local file.
rangeSourceSuite('BlobClient through the daemon blob API', async (data) => {
  const dir = await tempDir('blob-api')
  await writeFile(join(dir, 'blob'), data)
  const cid = await cidOf(data)
  const server = await serve(dir, new Map([[cid, join(dir, 'blob')]]))
  const client = new BlobClient()
  client.attach(join(dir, 'api.sock'))
  return { source: client.source(cid), cleanup: async () => { client.close(); await server.stop(); await removeDir(dir) } }
})

describe('BlobClient batches', () => {
  it('prefetch and background reads started together come back right through the daemon\'s blob API (one request of many ranges), one past the end cut there', async () => {
    const dir = await tempDir('blob-api')
    const data = Buffer.from(Array.from({ length: 200_000 }, (_, i) => (i * 7) % 256))
    await writeFile(join(dir, 'blob'), data)
    const cid = await cidOf(data)
    const server = await serve(dir, new Map([[cid, join(dir, 'blob')]]))
    const client = new BlobClient()
    client.attach(join(dir, 'api.sock'))
    try {
      for (const hint of [{ prefetch: true }, { background: true }]) {
        const source = client.source(cid)
        const ranges = Array.from({ length: 100 }, (_, i) => [(i * 1999) % 190_000, 1 + (i * 37) % 5000] as const)
        const all = [...ranges, [199_000, 5000] as const]
        const got = await Promise.all(all.map(async ([o, l]) => await source.read(o, l, undefined, hint)))
        all.forEach(([o, l], i) => { expect(Buffer.from(got[i]).equals(data.subarray(o, o + l))).toBe(true) })
      }
    } finally {
      client.close()
      await server.stop()
      await removeDir(dir)
    }
  })
})

describe('BlobClient errors', () => {
  it('an unknown CID is a BlobReadError with the daemon\'s reason; a bad CID is refused with 400', async () => {
    const dir = await tempDir('blob-api')
    const server = await serve(dir, new Map())
    const client = new BlobClient()
    client.attach(join(dir, 'api.sock'))
    try {
      const cid = await cidOf(Buffer.from('x'))
      const err = await client.source(cid).read(0, 10).catch((e: Error) => e)
      expect(err).toBeInstanceOf(BlobReadError)
      expect((err as BlobReadError).message).toMatch(/no blob/)
      const bad = await client.source('not-a-cid').read(0, 10).catch((e: Error) => e)
      expect(bad).toMatchObject({ status: 400, remoteCode: 'ERR_BAD_REQUEST' })
    } finally {
      client.close()
      await server.stop()
      await removeDir(dir)
    }
  })

  it('a background read reaches the daemon\'s source as one (priority=background); a bad priority is a 400', async () => {
    const dir = await tempDir('blob-api')
    const hints: Array<boolean | undefined> = []
    const blobs = new BlobReader({
      logger,
      openSource: async () => ({
        size: async () => 100,
        read: async (_o: number, length: number, _s?: AbortSignal, hint?: { background?: boolean }) => { hints.push(hint?.background); return new Uint8Array(length) }
      })
    })
    const server = new ControlServer({ logger, blobs, run: async () => 0 }, { address: join(dir, 'api.sock'), repo: dir })
    await server.start()
    const client = new BlobClient()
    client.attach(join(dir, 'api.sock'))
    try {
      const cid = await cidOf(Buffer.from('z'))
      const source = client.source(cid)
      await source.read(0, 10)
      await source.read(10, 10, undefined, { background: true })
      await source.read(20, 10, undefined, { background: false })
      expect(hints).toEqual([undefined, true, undefined])
      const bad = await new Promise<number>((resolve, reject) => {
        request({ socketPath: join(dir, 'api.sock'), path: `/v1/blobs/${cid}?offset=0&length=1&priority=urgent` }, res => { res.resume(); resolve(res.statusCode ?? 0) }).on('error', reject).end()
      })
      expect(bad).toBe(400)
    } finally {
      client.close()
      await server.stop()
      await removeDir(dir)
    }
  })

  it('prefetch and background reads have connections of their own: a container\'s read is answered while dozens of them hang', async () => {
    const dir = await tempDir('blob-api')
    let release: () => void = () => {}
    const held = new Promise<void>(resolve => { release = resolve })
    let started = 0
    const blobs = new BlobReader({
      logger,
      openSource: async () => ({
        size: async () => 1 << 20,
        read: async (_o: number, length: number, _s?: AbortSignal, hint?: { background?: boolean, prefetch?: boolean }) => {
          if (hint?.background === true || hint?.prefetch === true) { started++; await held }
          return new Uint8Array(length).fill(7)
        }
      })
    })
    const server = new ControlServer({ logger, blobs, run: async () => 0 }, { address: join(dir, 'api.sock'), repo: dir })
    await server.start()
    const client = new BlobClient()
    client.attach(join(dir, 'api.sock'))
    try {
      const source = client.source(await cidOf(Buffer.from('p')))
      // more of each than the on-demand agent has sockets (a learned record of scattered files)
      const hanging = [
        ...Array.from({ length: 40 }, async (_, i) => await source.read(i * 10, 10, undefined, { prefetch: true })),
        ...Array.from({ length: 40 }, async (_, i) => await source.read(i * 10, 10, undefined, { background: true }))
      ]
      const settled = Promise.allSettled(hanging)
      await until(() => started > 0, 'a held read')
      const t0 = Date.now()
      expect(Buffer.from(await source.read(0, 10))).toEqual(Buffer.alloc(10, 7))
      expect(Date.now() - t0).toBeLessThan(2000)
      release()
      expect((await settled).map(r => r.status)).toEqual(hanging.map(() => 'fulfilled'))
    } finally {
      release()
      client.close()
      await server.stop()
      await removeDir(dir)
    }
  })

  it('a read that times out in the daemon is a 504 with its code; any other failure a 502', async () => {
    const dir = await tempDir('blob-api')
    const blobs = new BlobReader({
      logger,
      openSource: async () => ({
        size: async () => 100,
        read: async (offset: number) => { throw offset === 0 ? new ReadTimeoutError('block: no answer within 5 ms') : new Error('disk on fire') }
      })
    })
    const server = new ControlServer({ logger, blobs, run: async () => 0 }, { address: join(dir, 'api.sock'), repo: dir })
    await server.start()
    const client = new BlobClient()
    client.attach(join(dir, 'api.sock'))
    try {
      const source = client.source(await cidOf(Buffer.from('t')))
      const timedOut = await source.read(0, 10).catch((e: Error) => e)
      expect(timedOut).toBeInstanceOf(BlobReadError)
      expect(timedOut).toMatchObject({ status: 504, remoteCode: 'ERR_READ_TIMEOUT', message: 'daemon blob API: block: no answer within 5 ms (ERR_READ_TIMEOUT)' })
      // an error without a code of its own carries the control API's
      expect(await source.read(10, 10).catch((e: Error) => e)).toMatchObject({ status: 502, remoteCode: 'ERR_CONTROL_API', message: 'daemon blob API: disk on fire (ERR_CONTROL_API)' })
    } finally {
      client.close()
      await server.stop()
      await removeDir(dir)
    }
  })

  it('an answer cut mid-way is read again, as from a daemon that went away', async () => {
    const dir = await tempDir('blob-cut')
    const sock = join(dir, 'api.sock')
    let calls = 0
    // answers 10 bytes, but the first time sends 5 and closes the connection
    const server = createServer((c) => {
      c.once('data', () => {
        calls++
        c.end(`HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\n${calls === 1 ? 'abcde' : 'abcdefghij'}`)
      })
    })
    await new Promise<void>(resolve => server.listen(sock, resolve))
    const client = new BlobClient({ maxWaitMs: 5_000, retryIntervalMs: 50 })
    client.attach(sock)
    try {
      expect(Buffer.from(await client.source(await cidOf(Buffer.from('z'))).read(0, 10))).toEqual(Buffer.from('abcdefghij'))
      expect(calls).toBe(2)
    } finally {
      client.close()
      await new Promise(resolve => server.close(resolve))
      await removeDir(dir)
    }
  })

  it('with no daemon it waits, then fails with BlobSourceUnavailableError', async () => {
    const client = new BlobClient({ maxWaitMs: 600, retryIntervalMs: 100 })
    const t0 = Date.now()
    const err = await client.source(await cidOf(Buffer.from('y'))).read(0, 1).catch((e: Error) => e)
    expect(err).toBeInstanceOf(BlobSourceUnavailableError)
    expect(Date.now() - t0).toBeGreaterThanOrEqual(500)
    client.attach('/nonexistent/api.sock')
    const err2 = await client.source(await cidOf(Buffer.from('y'))).read(0, 1).catch((e: Error) => e)
    expect((err2 as Error).message).toMatch(/has not answered/)
    client.close()
  })
})
