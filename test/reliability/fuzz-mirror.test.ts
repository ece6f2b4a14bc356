/**
 * Fuzzing the mirror's HTTP listener (registry façade and trustless gateway) with raw requests
 * over a socket: random and mutated request lines, paths, methods and headers (Range, Accept,
 * If-None-Match, Authorization). Each request is answered with a status of ours (never a 500,
 * which would mean an error we did not type) or the connection is closed, within its deadline;
 * the process never sees an unhandled rejection; honest requests are served right afterwards.
 */
import { connect } from 'node:net'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { silentLogger } from '../../src/logging.js'
import type { MirrorServer } from '../../src/mirror/index.js'
import { mirrorFixture, startMirror, type MirrorFixture } from '../mirror/helpers.js'
import { cases, mutationOf, record, SEED, shortReporter, within } from './harness.js'

const logger = silentLogger()

/** Sends raw bytes, returns the status of the first response (or 0 when the server closed without one). */
async function rawRequest (port: number, bytes: Uint8Array, halfClose = true): Promise<number> {
  return await new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    let head = ''
    socket.on('data', (d: Buffer) => {
      head += d.toString('latin1')
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(head)
      if (m != null) { socket.destroy(); resolve(Number(m[1])) }
    })
    socket.on('error', (err: NodeJS.ErrnoException) => { if (err.code === 'ECONNRESET' || err.code === 'EPIPE') resolve(0); else reject(err) })
    socket.on('close', () => { resolve(/^HTTP\/1\.[01] (\d{3})/.exec(head) != null ? Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1]) : 0) })
    // a half-close after the request is a client's right (the server may then close without an answer)
    if (halfClose) socket.end(bytes)
    else socket.write(bytes)
  })
}

describe('fuzz: mirror HTTP (registry API and gateway)', () => {
  let fixture: MirrorFixture
  let mirror: MirrorServer
  let port: number
  let root: string
  const unhandled: unknown[] = []
  const onUnhandled = (err: unknown): void => { unhandled.push(err) }

  beforeAll(async () => {
    process.on('unhandledRejection', onUnhandled)
    fixture = await mirrorFixture()
    root = fixture.root
    ;({ mirror, port } = await startMirror(fixture, {}, logger))
  }, 120_000)

  afterAll(async () => {
    process.off('unhandledRejection', onUnhandled)
    await mirror?.stop()
    await fixture?.cleanup()
  })

  it('random and mutated requests: a status of ours or a closed connection, never a 500 or an unhandled rejection', async () => {
    const name = `ipfs/${root}`
    const paths = [
      '/v2/', `/v2/${name}/manifests/latest`, `/v2/${name}/manifests/sha256:${'0'.repeat(64)}`, `/v2/${name}/blobs/sha256:${'a'.repeat(64)}`,
      `/ipfs/${root}`, `/ipfs/${root}?format=car&dag-scope=entity&entity-bytes=0:100`, `/ipfs/${root}?format=raw`, '/ipfs/bafkqaaa', '/', '//', '/v2/x/blobs/', '/ipfs/'
    ]
    const pathArb = fc.oneof(
      fc.constantFrom(...paths),
      fc.constantFrom(...paths).chain(p => mutationOf(Buffer.from(p)).map(b => Buffer.from(b).toString('latin1').replace(/[\r\n ]/g, '_'))),
      fc.webPath(),
      fc.tuple(fc.constantFrom('//', '/v2/', '/ipfs/', '/v2//', '//v2/'), fc.string({ maxLength: 40 })).map(([a, b]) => a + encodeURI(b).replace(/[\r\n ]/g, '_'))
    )
    const header = fc.oneof(
      fc.constantFrom('Range: bytes=0-10', 'Range: bytes=-1', 'Range: bytes=99999999999999999999-', 'Range: bytes=5-2', 'Range: bytes=0-1,3-4', 'Range: items=0-1',
        'Accept: application/vnd.ipld.car; version=1; order=dfs; dups=n', 'Accept: application/vnd.ipld.raw', 'Accept: */*;q=0.1', 'If-None-Match: "x"', 'If-None-Match: *',
        'Authorization: Basic !!!', 'Authorization: Basic ' + Buffer.from('a:b').toString('base64'), 'Content-Length: 5', 'Transfer-Encoding: chunked', 'Host: ', 'Expect: 100-continue'),
      fc.tuple(fc.stringMatching(/^[A-Za-z-]{1,20}$/), fc.string({ maxLength: 60 })).map(([k, v]) => `${k}: ${v.replace(/[\r\n]/g, '')}`)
    )
    const request = fc.record({
      method: fc.constantFrom('GET', 'GET', 'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'BREW'),
      path: pathArb,
      version: fc.constantFrom('HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/1.1 x'),
      headers: fc.array(header, { maxLength: 5 })
    }).map(r => Buffer.from(`${r.method} ${r.path} ${r.version}\r\nHost: 127.0.0.1\r\n${r.headers.map(h => h + '\r\n').join('')}Connection: close\r\n\r\n`, 'latin1'))
    const wire = fc.oneof({ weight: 6, arbitrary: request }, { weight: 1, arbitrary: request.chain(b => mutationOf(b)) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }) })
    const statuses = new Map<number, number>()
    let n = 0
    await fc.assert(fc.asyncProperty(wire, async (bytes) => {
      n++
      const status = await within(10_000, 'mirror request', async () => await rawRequest(port, bytes))
      statuses.set(status, (statuses.get(status) ?? 0) + 1)
      expect(status, Buffer.from(bytes).toString('latin1').slice(0, 300)).not.toBe(500)
      expect(unhandled, 'an unhandled rejection').toEqual([])
    }), { numRuns: cases(200, 10_000), seed: SEED, endOnFailure: true, reporter: shortReporter })
    // still serving
    const honest = await rawRequest(port, Buffer.from(`GET /v2/ipfs/${root}/manifests/latest HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`), false)
    expect(honest).toBe(200)
    const closed = statuses.get(0) ?? 0
    record({ kind: 'fuzz', target: 'mirror HTTP requests', cases: n, accepted: n - closed, rejected: closed, codes: [...statuses.keys()].sort((a, b) => a - b).map(s => s === 0 ? 'closed' : `HTTP ${s}`) })
  })
})
