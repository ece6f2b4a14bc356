/**
 * Defects the reliability campaign found, each kept as a test on the real path (a daemon process
 * as users run it).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { connect, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FuseManagerClient } from '../../src/fusemgr/index.js'
import { mirrorFixture, startMirror, type MirrorFixture } from '../mirror/helpers.js'
import type { MirrorServer } from '../../src/mirror/index.js'
import { startDaemon, type RunningDaemon } from '../../scripts/fixtures/daemon.js'
import { isRoot, needs } from '../helpers/env.js'
import { runCli } from '../../scripts/fixtures/run.js'

/** Sends raw bytes to a TCP port or a unix socket; resolves with the status line's code, 0 when closed without one. */
async function raw (target: { port: number } | { path: string }, bytes: string): Promise<number> {
  return await new Promise((resolve, reject) => {
    const socket = 'port' in target ? connect(target.port, '127.0.0.1') : connect(target.path)
    let head = ''
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`no answer to ${JSON.stringify(bytes)} within 10 s`)) }, 10_000)
    socket.on('data', (d: Buffer) => { head += d.toString('latin1') })
    socket.on('error', () => {})
    socket.on('close', () => { clearTimeout(timer); resolve(Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0)) })
    socket.write(bytes) // not end(): a half-closed client may be closed on before an async answer
  })
}

async function freePort (): Promise<number> {
  const s = createServer()
  await new Promise<void>(resolve => s.listen(0, '127.0.0.1', resolve))
  const port = (s.address() as { port: number }).port
  await new Promise(resolve => s.close(resolve))
  return port
}

describe.skipIf(needs({ root: isRoot }))('regressions found by the reliability campaign', () => {
  let dir: string
  let daemon: RunningDaemon
  let port: number

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reliability-regress-'))
    port = await freePort()
    daemon = await startDaemon({ root: join(dir, 'root'), args: ['--mirror', `127.0.0.1:${port}`] })
  }, 120_000)

  afterAll(async () => {
    await daemon?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('a request target that is not a URL path ("//", "///:") is answered 400 by the mirror and the control API; the daemon keeps running', async () => {
    // Before: `new URL()` threw outside any handler: an unhandled rejection (mirror) or an
    // uncaught exception (control socket) ended the daemon.
    for (const target of ['//', '///:', '//[', '//a:99999/x']) {
      expect(await raw({ port }, `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`), `mirror ${target}`).toBe(400)
      expect(await raw({ path: join(dir, 'root', 'api.sock') }, `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`), `control API ${target}`).toBe(400)
    }
    expect(daemon.proc.exitCode).toBeNull()
    expect(await raw({ port }, 'GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).toBe(200)
  })

  it('fuse-manager --stop refuses while a running daemon uses the manager (it would start a new one); --force stops it', async () => {
    // Before: --stop stopped the manager and the daemon started a new one at its next health check, silently.
    const root = join(dir, 'root')
    const manager = new FuseManagerClient(join(root, 'fuse-manager.sock'))
    const { pid } = await manager.health()
    const stop = await runCli(['fuse-manager', '--root', root, '--stop'])
    expect(stop.code).not.toBe(0)
    expect(stop.stderr).toMatch(/a running daemon .* uses this FUSE manager .*stop the daemon first, or pass --force/)
    expect((await manager.health()).pid).toBe(pid)
    const forced = await runCli(['fuse-manager', '--root', root, '--stop', '--force'])
    expect(forced.code, forced.stderr).toBe(0)
    const alive = (): boolean => { try { process.kill(pid, 0); return true } catch { return false } }
    for (let i = 0; i < 100 && alive(); i++) await new Promise(resolve => setTimeout(resolve, 100))
    expect(alive()).toBe(false)
  })
})

describe('mirror: a client that hangs up during a CAR answer', () => {
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
    // few streams: a handler that never finishes would use them up
    ;({ mirror, port } = await startMirror(fixture, { maxStreams: 3 }))
  }, 120_000)

  afterAll(async () => {
    process.off('unhandledRejection', onUnhandled)
    await mirror?.stop()
    await fixture?.cleanup()
  })

  it('the answer stops, the request\'s stream slot is given back, and no rejection goes unhandled', async () => {
    // Before: the CAR writer waited forever for a reader that had gone (its stream slot never
    // came back: after max_streams such clients every request was refused 429), and the send's
    // rejection was unhandled for that time (Node's default ends the process).
    const hangUp = async (): Promise<void> => await new Promise((resolve) => {
      const socket = connect(port, '127.0.0.1')
      socket.once('data', () => { socket.destroy(); resolve() }) // the first bytes of the 200, then gone
      socket.on('error', () => {})
      socket.on('close', () => { resolve() })
      socket.write(`GET /ipfs/${root}?format=car&dag-scope=all HTTP/1.1\r\nHost: x\r\n\r\n`)
    })
    for (let i = 0; i < 6; i++) await hangUp()
    await new Promise(resolve => setTimeout(resolve, 500))
    expect(unhandled).toEqual([])
    expect(await raw({ port }, `GET /ipfs/${root}?format=raw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)).toBe(200)
  })
})
