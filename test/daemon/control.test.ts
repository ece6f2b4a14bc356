import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises'
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { runCli } from '../../src/cli/program.js'
import { API_FILE, ControlServer, probeDaemon, type CommandRunner } from '../../src/daemon/control.js'
import { silentLogger } from '../../src/logging.js'
import { DEFAULTS as UNIX_HTTP_DEFAULTS } from '../../src/unix-http.js'
import { startDaemon, type RunningDaemon } from '../../scripts/fixtures/daemon.js'
import { hasCommand, hasFuse, isRoot, needs } from '../helpers/env.js'
import { cliPath } from '../../scripts/fixtures/tools.js'
import { allBlobs, makeImage, tagged, writeLayout } from '../../scripts/fixtures/oci-image.js'
import { REGISTRY_BIN, startRegistry, type TestRegistry } from '../../scripts/fixtures/registry.js'
import { runCli as runBuiltCli, type RunResult } from '../../scripts/fixtures/run.js'

async function cli (args: string[]): Promise<RunResult<string>> {
  return await runBuiltCli(args)
}

/**
 * A front for the registry that holds GETs of the given blobs until `open()`: a push from it is
 * in progress for as long as the test wants, deterministically. It tells when such a GET came and
 * when the client closed it (the push was cancelled).
 */
interface Gate {
  host: string
  requested: Promise<void>
  closedByClient: () => boolean
  open: () => void
  close: () => void
  stop: () => Promise<void>
}

async function gatedRegistry (upstream: string, held: (path: string) => boolean): Promise<Gate> {
  let opened = false
  let waiters: Array<() => void> = []
  let signalRequested!: () => void
  let closed = false
  const gate: Partial<Gate> = {}
  const reset = (): void => {
    opened = false
    closed = false
    gate.requested = new Promise(resolve => { signalRequested = resolve })
  }
  reset()
  const [host, port] = upstream.split(':')
  const proxy = (req: IncomingMessage, res: ServerResponse): void => {
    const up = request({ host, port: Number(port), method: req.method, path: req.url, headers: { ...req.headers, host: upstream } }, ur => {
      res.writeHead(ur.statusCode ?? 502, ur.headers)
      ur.pipe(res)
    })
    up.on('error', () => res.socket?.destroy())
    req.pipe(up)
  }
  const server: Server = createServer((req, res) => {
    if (req.method === 'GET' && held(req.url ?? '') && !opened) {
      signalRequested()
      let done = false
      req.socket.once('close', () => { if (!done) closed = true })
      waiters.push(() => { done = true; if (!req.socket.destroyed) proxy(req, res) })
      return
    }
    proxy(req, res)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return Object.assign(gate, {
    host: `127.0.0.1:${(server.address() as { port: number }).port}`,
    closedByClient: () => closed,
    open: () => { opened = true; for (const w of waiters) w(); waiters = [] },
    close: reset,
    stop: async () => {
      server.closeAllConnections()
      await new Promise(resolve => server.close(resolve))
    }
  }) as Gate
}

async function until (what: string, cond: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

const exited = async (child: ChildProcess): Promise<number | null> => await new Promise(resolve => {
  if (child.exitCode != null || child.signalCode != null) resolve(child.exitCode)
  else child.once('exit', code => resolve(code))
})

describe.skipIf(needs({ root: isRoot, fuse: hasFuse, registry: hasCommand(REGISTRY_BIN) }))('commands forwarded to the daemon', () => {
  let dir: string
  let registry: TestRegistry
  let gate: Gate
  let d: RunningDaemon
  let ref: string

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'control-test-'))
    await mkdir(join(dir, 'tmp'))
    const image = makeImage({ seed: 'cancel', layerSize: 200_000 })
    await writeLayout(join(dir, 'img'), allBlobs(image), [tagged(image.manifest.descriptor, 'latest')])
    registry = await startRegistry()
    const r = await cli(['push', `oci:${join(dir, 'img')}`, '--no-ipfs', '--to', `docker://${registry.host}/test/cancel:1`, '--plain-http', '--json'])
    if (r.code !== 0) throw new Error(r.stderr)
    const layers = (JSON.parse(r.stdout) as { images: Array<{ layers: Array<{ digest: string }> }> }).images[0].layers.map(l => l.digest)
    gate = await gatedRegistry(registry.host, path => layers.some(l => path.endsWith(`/blobs/${l}`)))
    ref = `docker://${gate.host}/test/cancel:1`
    // the daemon's temp dirs (push makes one) go where the test can see them
    d = await startDaemon({ root: join(dir, 'root'), env: { TMPDIR: join(dir, 'tmp') }, config: '[fuse_manager]\nenable = false\n' })
  }, 300_000)

  afterAll(async () => {
    gate?.open()
    await d?.stop()
    await gate?.stop()
    await registry?.stop()
    if (dir != null) await rm(dir, { recursive: true, force: true })
  })

  it('kill -9 of the CLI cancels its push in the daemon: the fetch stops, nothing is listed, no temp dir is left', async () => {
    const child = spawn(process.execPath, [cliPath, 'push', ref, '--plain-http', '--repo', d.root], { stdio: 'ignore' })
    await gate.requested
    expect(d.log()).toContain('running command for a client')
    child.kill('SIGKILL')
    await exited(child)
    await until('the daemon to end the command', () => d.log().includes('command ended'), 20_000).catch(() => {})
    // were the push still running, it would finish now
    gate.open()
    await new Promise(resolve => setTimeout(resolve, 2000))
    const ls = await cli(['image', 'ls', '--repo', d.root])
    expect(ls.code, ls.stderr).toBe(0)
    expect(ls.stdout).toBe('')
    expect(d.log()).toContain('the client went away: cancelling the command')
    const ended = JSON.parse(d.log().split('\n').find(l => l.includes('command ended')) ?? '{}') as { cancelled?: boolean, exit?: number }
    expect(ended).toMatchObject({ cancelled: true, exit: 1 })
    expect(gate.closedByClient()).toBe(true) // the daemon closed its fetch of the layer before the gate opened
    expect(await readdir(join(dir, 'tmp'))).toEqual([])
  })

  it('a closed stdout (`| head`) ends the CLI quietly, forwarded or not', async () => {
    for (const args of [['id', '--repo', d.root], ['containerd-config']]) {
      const child = spawn(process.execPath, [cliPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
      child.stdout?.destroy() // the reader is gone before the first write
      let stderr = ''
      child.stderr?.on('data', (b: Buffer) => { stderr += b.toString() })
      const code = await exited(child)
      expect(stderr, args.join(' ')).toBe('')
      expect(code, args.join(' ')).toBe(141)
    }
  })

  it('a daemon killed mid-command leaves the CLI with one line and a non-zero exit, not a stack trace', async () => {
    gate.close()
    const child = spawn(process.execPath, [cliPath, 'push', ref, '--plain-http', '--repo', d.root], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr?.on('data', (b: Buffer) => { stderr += b.toString() })
    await gate.requested
    await d.kill()
    const code = await exited(child)
    expect(code).toBe(1)
    expect(stderr.trim().split('\n')).toEqual([expect.stringMatching(/^ipfs-estargz: the daemon closed the connection mid-command \(.+\) \(ERR_DAEMON_DISCONNECTED\)$/)])
  })
})

/** POSTs (or sends `method`) to the control socket; the answer's status and NDJSON lines (or raw body). */
async function call (socket: string, path: string, body?: string, method = body != null ? 'POST' : 'GET'): Promise<{ status: number, body: string, lines: Array<{ out?: string, err?: string, exit?: number }> }> {
  return await new Promise((resolve, reject) => {
    // Its own connection (agent: false), not the global keep-alive agent: a refused body may still
    // be in flight when the answer ends, and its EPIPE must reach this request's error listener.
    const req = request({ socketPath: socket, path, method, agent: false, headers: { 'content-type': 'application/json' } }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (s: string) => { text += s })
      res.on('end', () => {
        const lines = res.headers['content-type'] === 'application/x-ndjson' ? text.split('\n').filter(l => l !== '').map(l => JSON.parse(l) as { out?: string, err?: string, exit?: number }) : []
        resolve({ status: res.statusCode ?? 0, body: text, lines })
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

describe('ControlServer (in process)', () => {
  let dir: string | undefined
  let server: ControlServer | undefined
  let ran: string[][] = []

  afterEach(async () => {
    await server?.stop()
    if (dir != null) await rm(dir, { recursive: true, force: true })
    server = undefined
    dir = undefined
    ran = []
  })

  async function start (run: CommandRunner): Promise<string> {
    dir = await mkdtemp(join(tmpdir(), 'control-unit-'))
    const address = join(dir, 'api.sock')
    server = new ControlServer({ logger: silentLogger(), run: async (argv, io) => { ran.push(argv); return await run(argv, io) } }, { address, repo: dir })
    await server.start()
    return address
  }

  it('answers its health route with the repo, on a 0600 socket the repo\'s api file names; stop removes both', async () => {
    const address = await start(async () => 0)
    const health = await call(address, '/v1/health')
    expect(health.status).toBe(200)
    expect(JSON.parse(health.body)).toEqual({ ok: true, root: dir })
    expect(await probeDaemon(address)).toEqual({ state: 'up', root: dir })
    expect((await stat(address)).mode & 0o777).toBe(0o600)
    const apiFile = join(dir as string, API_FILE)
    expect(await readFile(apiFile, 'utf8')).toBe(address)
    expect((await stat(apiFile)).mode & 0o777).toBe(0o600)
    await server?.stop()
    expect(existsSync(address)).toBe(false)
    expect(existsSync(apiFile)).toBe(false)
    expect(await probeDaemon(address)).toEqual({ state: 'absent' })
  })

  it('refuses a body that is not JSON or whose argv is not a list of strings with 400 and ERR_BAD_REQUEST, running nothing', async () => {
    const address = await start(async () => 0)
    for (const body of ['{"argv": [', 'null', '{"argv": "id"}', '{"argv": ["id", 3]}', '{}']) {
      const r = await call(address, '/v1/run', body)
      expect(r.status, body).toBe(400)
      expect(JSON.parse(r.body), body).toEqual({ error: expect.any(String), code: 'ERR_BAD_REQUEST' })
    }
    expect(ran).toEqual([])
  })

  it('refuses a body over its limit with 413, running nothing', async () => {
    const address = await start(async () => 0)
    const huge = JSON.stringify({ argv: ['x'.repeat(UNIX_HTTP_DEFAULTS.maxBodyBytes)] })
    const r = await call(address, '/v1/run', huge)
    expect({ status: r.status, body: JSON.parse(r.body) as unknown }).toEqual({ status: 413, body: { error: expect.stringMatching(/exceeds the limit/), code: 'ERR_BODY_TOO_LARGE' } })
    expect(ran).toEqual([])
  })

  it('answers 404 for unknown routes and for blobs when it serves none, 405 for another method of a route, with the control API\'s code', async () => {
    const address = await start(async () => 0)
    const cases: Array<[string, string, number]> = [['GET', '/v1/run', 405], ['POST', '/v1/nothing', 404], ['GET', '/', 404], ['POST', '/v1/health', 405], ['GET', '/v1/blobs/bafkqaaa/size', 404]]
    for (const [method, path, status] of cases) {
      const r = await call(address, path, method === 'POST' ? '{"argv":[]}' : undefined, method)
      expect({ status: r.status, body: JSON.parse(r.body) as unknown }, `${method} ${path}`).toEqual({ status, body: { error: expect.any(String), code: 'ERR_CONTROL_API' } })
    }
    expect(ran).toEqual([])
  })

  it('an unknown command ends with the CLI\'s usage error and exit 2; a command that throws, with its message and exit 1', async () => {
    const address = await start(async (argv, io) => {
      if (argv[0] === 'explode') throw new Error('the command broke')
      return await runCli(argv, { stdout: io.stdout, stderr: io.stderr, signal: io.signal })
    })
    const unknown = await call(address, '/v1/run', JSON.stringify({ argv: ['no-such-command'] }))
    expect(unknown.status).toBe(200)
    expect(unknown.lines.at(-1)).toEqual({ exit: 2 })
    expect(unknown.lines.filter(l => l.err != null).map(l => l.err).join('')).toMatch(/unknown command 'no-such-command'/)
    const broken = await call(address, '/v1/run', JSON.stringify({ argv: ['explode'] }))
    expect(broken.lines).toEqual([{ err: 'the command broke\n' }, { exit: 1 }])
  })

  it('streams stdout as base64 lines that decode to the bytes written, then the exit code', async () => {
    const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
    const address = await start(async (_argv, io) => {
      await io.stdout(bytes.subarray(0, 100))
      io.stderr('halfway\n')
      await io.stdout(bytes.subarray(100))
      await io.stdout('text too')
      return 7
    })
    const r = await call(address, '/v1/run', JSON.stringify({ argv: ['anything'] }))
    expect(r.lines.at(-1)).toEqual({ exit: 7 })
    expect(Buffer.concat(r.lines.filter(l => l.out != null).map(l => Buffer.from(l.out as string, 'base64')))).toEqual(Buffer.concat([bytes, Buffer.from('text too')]))
    expect(r.lines.filter(l => l.err != null)).toEqual([{ err: 'halfway\n' }])
  })

  it('stop cancels a running command (its signal fires) and waits for it to end', async () => {
    let cleanedUp = false
    let started: () => void = () => {}
    const running = new Promise<void>(resolve => { started = resolve })
    const address = await start(async (_argv, io) => {
      started()
      await new Promise(resolve => io.signal.addEventListener('abort', resolve, { once: true }))
      await new Promise(resolve => setTimeout(resolve, 200)) // cleaning up takes a while
      cleanedUp = true
      return 1
    })
    const pending = call(address, '/v1/run', JSON.stringify({ argv: ['long'] })).catch((e: Error) => e)
    await running
    await server?.stop()
    expect(cleanedUp).toBe(true)
    await pending // the connection was closed under it: whatever it got, it did not hang
  })
})
