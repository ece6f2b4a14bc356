import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FuseManagerCancelledError, FuseManagerClient, FuseManagerTimeoutError, ROUTES } from '../../src/fusemgr/index.js'

/**
 * The FUSE manager's client against a stand-in server that answers after `delayMs`: every call
 * is bounded by our own timeouts or the caller's signal, never by a socket timeout of Node's
 * (its global agent closes a socket after 5 s, which cut every mount that took longer).
 */
describe('FUSE manager client timeouts', () => {
  let dir: string
  let server: Server
  let socket: string
  let delayMs = 0
  const closedEarly: string[] = []

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fm-api-'))
    socket = join(dir, 'fm.sock')
    server = createServer((req, res) => {
      req.resume()
      const timer = setTimeout(() => {
        const body = req.url === ROUTES.mount ? { mounted: true, tocDigest: 'sha256:t' } : req.url === ROUTES.mounts ? [] : {}
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body))
      }, delayMs)
      res.on('close', () => {
        if (!res.writableFinished) {
          clearTimeout(timer)
          closedEarly.push(req.url ?? '')
        }
      })
    })
    await new Promise<void>(resolve => server.listen(socket, resolve))
  })

  afterAll(async () => {
    server.closeAllConnections()
    await new Promise(resolve => server.close(resolve))
    await rm(dir, { recursive: true, force: true })
  })

  it('a mount answered after 6 s succeeds when the caller\'s signal allows 20 s', async () => {
    delayMs = 6_000
    const client = new FuseManagerClient(socket)
    const started = Date.now()
    expect(await client.mount({ mountpoint: '/x', cid: 'bafy' }, AbortSignal.timeout(20_000))).toEqual({ mounted: true, tocDigest: 'sha256:t' })
    expect(Date.now() - started).toBeGreaterThanOrEqual(5_900)
  }, 30_000)

  it('other calls get the configured call timeout (6 s of 8 s succeeds; 6 s of 1 s fails with our error)', async () => {
    delayMs = 6_000
    expect(await new FuseManagerClient(socket, { callTimeoutMs: 8_000 }).mounts()).toEqual([])
    const started = Date.now()
    const err = await new FuseManagerClient(socket, { callTimeoutMs: 1_000 }).unmount('/x').catch((e: unknown) => e)
    expect(err).toBeInstanceOf(FuseManagerTimeoutError)
    expect((err as FuseManagerTimeoutError).code).toBe('ERR_FUSE_MANAGER_TIMEOUT')
    expect((err as Error).message).toContain('within 1000 ms')
    expect(Date.now() - started).toBeLessThan(2_000)
  }, 30_000)

  it('a mount without a signal is bounded by mountTimeoutMs; the caller\'s abort closes the connection (the manager cancels)', async () => {
    delayMs = 3_000
    const timedOut = await new FuseManagerClient(socket, { mountTimeoutMs: 500 }).mount({ mountpoint: '/y', cid: 'bafy' }).catch((e: unknown) => e)
    expect(timedOut).toBeInstanceOf(FuseManagerTimeoutError)
    closedEarly.length = 0
    const ac = new AbortController()
    setTimeout(() => ac.abort(new Error('the snapshotter gave up')), 300)
    const cancelled = await new FuseManagerClient(socket).mount({ mountpoint: '/z', cid: 'bafy' }, ac.signal).catch((e: unknown) => e)
    expect(cancelled).toBeInstanceOf(FuseManagerCancelledError)
    expect((cancelled as Error).message).toContain('the snapshotter gave up')
    for (let i = 0; i < 50 && closedEarly.length === 0; i++) await new Promise(resolve => setTimeout(resolve, 20))
    expect(closedEarly).toEqual([ROUTES.mount])
  }, 30_000)
})
