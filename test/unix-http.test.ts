/**
 * The one plumbing of our unix-socket APIs, on a real socket: routes, the one error body, limits,
 * and the client's typed errors (answers, timeouts, cancels, broken and cut connections, and the
 * error bodies of the version before).
 */
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { request } from 'node:http'
import { createServer as createNetServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AbortError, BadRequestError, IpfsEstargzError } from '../src/errors.js'
import { serveUnixHttp, UnixHttpClient, type CallInfo, type ClientErrors, type UnixHttpServer } from '../src/unix-http.js'

/** Stand-ins for a protocol's classes: what the client's factories were given. */
class Answered extends Error {
  constructor (readonly call: CallInfo, readonly answer: { message: string, remoteCode?: string, status: number }) { super(answer.message) }
}
class TimedOut extends Error {}
class Cut extends Error {}
class Broken extends Error {}

const errors: ClientErrors = {
  answered: (call, answer) => new Answered(call, answer),
  timeout: (call) => new TimedOut(`no answer within ${call.timeoutMs} ms`),
  cut: () => new Cut('cut'),
  connection: (_call, err) => new Broken(err.code ?? err.message)
}

/** Our error with a status, as a module's errors.ts would declare it. */
class TeapotError extends IpfsEstargzError {
  static readonly code = 'ERR_TEST_TEAPOT'
  readonly status = 418
}

interface Raw { status: number, headers: Record<string, string | string[] | undefined>, body: string }

async function raw (socket: string, method: string, path: string, body?: string, chunked = false): Promise<Raw> {
  return await new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, method, path, agent: false, headers: chunked ? { 'transfer-encoding': 'chunked' } : {} }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (s: string) => { text += s })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }))
    })
    req.on('error', reject)
    if (chunked && body != null) {
      for (let i = 0; i < body.length; i += 65536) req.write(body.slice(i, i + 65536))
      req.end()
    } else {
      req.end(body)
    }
  })
}

describe('unix-http server and client', () => {
  let dir: string
  let socket: string
  let http: UnixHttpServer
  const logged: Array<{ message: string, status: number }> = []
  let cancelled: unknown

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'unix-http-'))
    socket = join(dir, 'api.sock')
    http = await serveUnixHttp([
      { method: 'POST', path: '/echo', handle: ({ body }) => ({ got: body }) },
      { method: 'GET', path: '/empty', handle: () => undefined },
      { method: 'GET', path: '/bytes/', prefix: true, handle: ({ url }) => Buffer.from(url.pathname.slice('/bytes/'.length)) },
      { method: 'GET', path: '/ours', handle: () => { throw new TeapotError('short and stout') } },
      { method: 'GET', path: '/plain', handle: () => { throw new Error('no code of its own') } },
      { method: 'GET', path: '/errno', handle: () => { throw Object.assign(new Error('gone'), { code: 'ENOENT' }) } },
      { method: 'GET', path: '/routed', handle: () => { throw new Error('mapped by the route') }, statusOf: () => 502 },
      { method: 'POST', path: '/bad', handle: () => { throw new BadRequestError('no such field') } },
      {
        method: 'GET',
        path: '/slow',
        handle: async ({ signal }) => await new Promise((resolve, reject) => {
          const timer = setTimeout(() => resolve({ late: true }), 1_500)
          signal.addEventListener('abort', () => { clearTimeout(timer); cancelled = signal.reason; reject(new Error('cancelled')) }, { once: true })
        })
      },
      {
        method: 'GET',
        path: '/stream',
        stream: true,
        handle: async ({ res, url }) => {
          if (url.searchParams.has('early')) throw new TeapotError('before the head')
          res.writeHead(200, { 'content-type': 'application/x-ndjson' })
          res.write('{"line":1}\n')
          if (url.searchParams.has('late')) {
            await new Promise(resolve => setTimeout(resolve, 50)) // the head and the first line are on their way
            throw new TeapotError('after the head')
          }
          res.end('{"line":2}\n')
        }
      }
    ], {
      socket,
      code: 'ERR_TEST_SERVER',
      statusOf: (err) => err instanceof TeapotError ? err.status : undefined,
      onError: (err, status) => { logged.push({ message: err.message, status }) },
      maxBodyBytes: 1000
    })
  })

  afterAll(async () => {
    await http.close()
    await rm(dir, { recursive: true, force: true })
  })

  it('listens on a 0600 socket; close removes it', async () => {
    expect((await stat(socket)).mode & 0o777).toBe(0o600)
    const other = await serveUnixHttp([], { socket: join(dir, 'other.sock'), code: 'ERR_TEST_SERVER' })
    await other.close()
    await expect(stat(join(dir, 'other.sock'))).rejects.toMatchObject({ code: 'ENOENT' })
  })

  it('answers JSON, bytes and empty answers; the client parses them', async () => {
    const client = new UnixHttpClient(socket, { errors })
    expect(await client.json('POST', '/echo', { body: { a: [1, 'x'] } })).toEqual({ got: { a: [1, 'x'] } })
    expect(await client.json('POST', '/echo')).toEqual({})
    expect(await client.json('GET', '/empty')).toBeUndefined()
    expect((await client.bytes('GET', '/bytes/abc')).toString()).toBe('abc')
    expect(await raw(socket, 'GET', '/bytes/xyz')).toMatchObject({ status: 200, headers: { 'content-type': 'application/octet-stream', 'content-length': '3' }, body: 'xyz' })
    expect(await client.answers('/empty')).toBe(true)
    expect(await client.answers('/nothing')).toBe(false)
    client.close()
  })

  it('answers every error with { error, code }: the error\'s own code, else the server\'s; the status from the route, the server or the error kind', async () => {
    const cases: Array<[string, string, string | undefined, number, string, string]> = [
      ['GET', '/ours', undefined, 418, 'short and stout', 'ERR_TEST_TEAPOT'],
      ['GET', '/plain', undefined, 500, 'no code of its own', 'ERR_TEST_SERVER'],
      ['GET', '/errno', undefined, 500, 'gone', 'ENOENT'],
      ['GET', '/routed', undefined, 502, 'mapped by the route', 'ERR_TEST_SERVER'],
      ['POST', '/bad', '{}', 400, 'no such field', 'ERR_BAD_REQUEST'],
      ['POST', '/echo', '{"a":', 400, 'body is not JSON', 'ERR_BAD_REQUEST'],
      ['GET', '/none', undefined, 404, 'no route GET /none', 'ERR_TEST_SERVER'],
      ['POST', '/empty', '{}', 405, 'only GET on /empty', 'ERR_TEST_SERVER'],
      ['GET', '/stream?early', undefined, 418, 'before the head', 'ERR_TEST_TEAPOT']
    ]
    for (const [method, path, body, status, error, code] of cases) {
      const r = await raw(socket, method, path, body)
      expect({ status: r.status, type: r.headers['content-type'], body: JSON.parse(r.body) as unknown }, `${method} ${path}`).toEqual({ status, type: 'application/json', body: { error, code } })
    }
    expect((await raw(socket, 'POST', '/empty')).headers.allow).toBe('GET')
    expect(logged).toContainEqual({ message: 'no code of its own', status: 500 })
  })

  it('refuses a body over its limit with 413, declared or chunked, and keeps serving', async () => {
    for (const chunked of [false, true]) {
      const r = await raw(socket, 'POST', '/echo', JSON.stringify({ pad: 'x'.repeat(2000) }), chunked)
      expect({ status: r.status, body: JSON.parse(r.body) as unknown }, `chunked: ${String(chunked)}`).toEqual({ status: 413, body: { error: 'the request body exceeds the limit of 1000 bytes', code: 'ERR_BODY_TOO_LARGE' } })
    }
    expect(await new UnixHttpClient(socket, { errors }).json('POST', '/echo', { body: 1 })).toEqual({ got: 1 })
  })

  it('streams: an error before the head is answered, after it the connection is closed (the client sees a cut answer)', async () => {
    const client = new UnixHttpClient(socket, { errors })
    const res = await client.open('GET', '/stream')
    let text = ''
    for await (const c of res) text += String(c)
    expect(text).toBe('{"line":1}\n{"line":2}\n')
    await expect(client.open('GET', '/stream?early')).rejects.toMatchObject({ answer: { status: 418, remoteCode: 'ERR_TEST_TEAPOT', message: 'before the head' } })
    await expect(client.bytes('GET', '/stream?late')).rejects.toBeInstanceOf(Cut)
  })

  it('the client: an error answer is the protocol\'s error with the remote code and status', async () => {
    const client = new UnixHttpClient(socket, { errors })
    const err = await client.json('GET', '/ours').catch((e: unknown) => e)
    expect(err).toBeInstanceOf(Answered)
    expect(err).toMatchObject({ call: { method: 'GET', path: '/ours' }, answer: { message: 'short and stout', remoteCode: 'ERR_TEST_TEAPOT', status: 418 } })
  })

  it('the client: a timeout and the caller\'s abort close the connection, and the server\'s call is cancelled', async () => {
    const client = new UnixHttpClient(socket, { errors, callTimeoutMs: 200 })
    const t0 = Date.now()
    await expect(client.json('GET', '/slow')).rejects.toThrow(new TimedOut('no answer within 200 ms'))
    expect(Date.now() - t0).toBeLessThan(1_000)
    for (let i = 0; i < 50 && cancelled == null; i++) await new Promise(resolve => setTimeout(resolve, 20))
    expect(cancelled).toBeDefined()
    cancelled = undefined
    const ac = new AbortController()
    setTimeout(() => ac.abort(new Error('the caller gave up')), 100)
    const aborted = await client.json('GET', '/slow', { signal: ac.signal, timeoutMs: 0 }).catch((e: unknown) => e)
    expect(aborted).toBeInstanceOf(AbortError) // no `cancelled` factory: our AbortError, with the reason
    expect((aborted as Error).cause).toMatchObject({ message: 'the caller gave up' })
    for (let i = 0; i < 50 && cancelled == null; i++) await new Promise(resolve => setTimeout(resolve, 20))
    expect(cancelled).toBeDefined()
    // given a timeout of 0, only the signal bounds the call: the late answer arrives
    expect(await client.json('GET', '/slow', { timeoutMs: 0 })).toEqual({ late: true })
  })

  it('the client: no socket is a connection error; so is nothing listening', async () => {
    await expect(new UnixHttpClient(join(dir, 'none.sock'), { errors }).json('GET', '/x')).rejects.toThrow(new Broken('ENOENT'))
    // without a `connection` factory, Node's error as it is
    await expect(new UnixHttpClient(join(dir, 'none.sock'), { errors: { answered: errors.answered, timeout: errors.timeout } }).json('GET', '/x')).rejects.toMatchObject({ code: 'ENOENT' })
  })
})

describe('unix-http client against other servers', () => {
  let dir: string
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'unix-http-raw-')) })
  afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

  /** A server that answers every request with `answer`, raw. */
  async function answering (name: string, answer: string): Promise<{ socket: string, stop: () => Promise<void> }> {
    const socket = join(dir, name)
    const server = createNetServer((c) => { c.once('data', () => { c.end(answer) }) })
    await new Promise<void>(resolve => server.listen(socket, resolve))
    return { socket, stop: async () => { await new Promise(resolve => server.close(resolve)) } }
  }

  it('tolerates the error bodies of the version before: { error } without a code, and an empty body', async () => {
    const body = '{"error":"x (ERR_SOMETHING)"}'
    const old = await answering('old.sock', `HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`)
    const empty = await answering('empty.sock', 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
    try {
      const a = await new UnixHttpClient(old.socket, { errors }).bytes('GET', '/v1/blobs/x').catch((e: unknown) => e)
      expect(a).toMatchObject({ answer: { message: 'x (ERR_SOMETHING)', status: 502 } })
      expect((a as Answered).answer.remoteCode).toBeUndefined()
      const b = await new UnixHttpClient(empty.socket, { errors }).json('POST', '/v1/run').catch((e: unknown) => e)
      expect(b).toMatchObject({ answer: { message: 'POST /v1/run: HTTP 404', status: 404 } })
    } finally {
      await old.stop()
      await empty.stop()
    }
  })

  it('an answer shorter than its length is cut; one over the client\'s limit fails as an answer; a 200 that is not JSON too', async () => {
    const short = await answering('short.sock', 'HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nabcde')
    const big = await answering('big.sock', `HTTP/1.1 200 OK\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n${'y'.repeat(2000)}`)
    try {
      await expect(new UnixHttpClient(short.socket, { errors }).bytes('GET', '/x')).rejects.toBeInstanceOf(Cut)
      const tooBig = await new UnixHttpClient(big.socket, { errors, maxAnswerBytes: 1000 }).bytes('GET', '/x').catch((e: unknown) => e)
      expect(tooBig).toMatchObject({ answer: { message: 'GET /x: the answer exceeds the limit of 1000 bytes', status: 200 } })
      const notJson = await new UnixHttpClient(big.socket, { errors }).json('GET', '/x').catch((e: unknown) => e)
      expect(notJson).toMatchObject({ answer: { message: 'GET /x: answered HTTP 200 with a body that is not JSON', status: 200 } })
    } finally {
      await short.stop()
      await big.stop()
    }
  })
})
