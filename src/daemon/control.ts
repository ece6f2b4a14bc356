import { chmod, rm, writeFile } from 'node:fs/promises'
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { join } from 'node:path'
import type { Logger } from '../logging.js'
import { answersOnSocket } from '../unix-http.js'
import { BLOBS_PREFIX, type BlobReader } from './blob-api.js'

/**
 * The control API: a unix socket on which the daemon runs CLI commands for clients, with its
 * own open repo (like Kubo: while a daemon owns a repo, the CLI talks to it instead of opening
 * the repo). `POST /v1/run` takes `{ argv }` and answers with NDJSON lines:
 * `{ "out": base64 }`, `{ "err": text }`, and finally `{ "exit": code }`; a client that hangs up
 * cancels its command (its `signal` fires), a response without the exit line means the daemon
 * went away (`runInDaemon` says so in a DaemonDisconnectedError). With a `blobs` component
 * it also serves `GET /v1/blobs/...`, the byte ranges the FUSE manager's mounts read.
 */
export type CommandRunner = (argv: string[], io: { stdout: (data: Uint8Array | string) => Promise<void>, stderr: (text: string) => void, signal: AbortSignal }) => Promise<number>

/** Control API defaults, in one place. */
export const DEFAULTS = {
  /**
   * At stop, commands still running are cancelled; this long they may take to clean up (remove
   * temp dirs, stop writing) before the daemon closes the repo under them.
   */
  stopWaitMs: 10_000,
  /** The CLI gives a daemon this long to answer its health route before calling it unreachable. */
  healthTimeoutMs: 2_000
} as const

/**
 * The control socket of a daemon started with the default addresses (`api.sock` next to the
 * default snapshotter socket): where the CLI looks for a daemon when no repo is named.
 */
export const DEFAULT_API_ADDRESS = '/run/ipfs-estargz/api.sock'

/** Environment variable naming a daemon's control socket (like Kubo's `IPFS_PATH` names the repo). */
export const API_ENV = 'IPFS_ESTARGZ_API'

/** Options whose value is a secret: never logged. */
const SECRET_OPTIONS = new Set(['--creds'])

/** argv as it may be logged: secret option values replaced. */
function loggable (argv: string[]): string[] {
  return argv.map((a, i) => {
    if (i > 0 && SECRET_OPTIONS.has(argv[i - 1])) return '***'
    const eq = a.indexOf('=')
    return eq > 0 && SECRET_OPTIONS.has(a.slice(0, eq)) ? `${a.slice(0, eq)}=***` : a
  })
}

/** File in the repo naming the control socket, so `--repo DIR` finds a running daemon. */
export const API_FILE = 'api'

export class ControlServer {
  private server?: Server
  /** Commands run so far: numbers them in the log. */
  private commands = 0
  /** Commands still running. */
  private readonly running = new Set<Promise<void>>()
  private stopping = false

  constructor (private readonly components: { logger: Logger, run: CommandRunner, blobs?: BlobReader }, private readonly options: { address: string, repo: string }) {}

  async start (): Promise<void> {
    await rm(this.options.address, { force: true })
    const server = createServer((req, res) => {
      if (req.method === 'GET' && req.url === '/v1/health') {
        const health: DaemonHealth = { ok: true, root: this.options.repo }
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(health))
        return
      }
      if (this.components.blobs != null && req.url?.startsWith(BLOBS_PREFIX) === true) {
        this.components.blobs.handle(req, res)
        return
      }
      if (req.method !== 'POST' || req.url !== '/v1/run') {
        res.writeHead(404).end()
        return
      }
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        let argv: string[]
        try {
          argv = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { argv: string[] }).argv
          if (!Array.isArray(argv) || argv.some(a => typeof a !== 'string')) throw new Error('argv must be a list of strings')
        } catch (err) {
          res.writeHead(400).end(JSON.stringify({ error: (err as Error).message }))
          return
        }
        this.runForClient(argv, req, res)
      })
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.options.address, () => { server.off('error', reject); resolve() })
    })
    await chmod(this.options.address, 0o600)
    await writeFile(join(this.options.repo, API_FILE), this.options.address, { mode: 0o600 })
    this.server = server
  }

  /**
   * Runs one command and streams its output. The command is cancelled (its signal fires) as soon
   * as the client goes away: Ctrl-C or kill -9 of the CLI, or the daemon stopping. The socket's
   * 'close' is seen whether or not anything was written yet (a push writes nothing for minutes).
   */
  private runForClient (argv: string[], req: IncomingMessage, res: ServerResponse): void {
    const log = this.components.logger.child({ command: ++this.commands, argv: loggable(argv) })
    const ac = new AbortController()
    let ended = false
    const onGone = (): void => {
      if (ended || res.writableFinished || ac.signal.aborted) return
      log.warn(this.stopping ? 'the daemon stops: cancelling the command' : 'the client went away: cancelling the command')
      ac.abort()
    }
    req.socket.once('close', onGone)
    res.once('close', onGone)
    res.writeHead(200, { 'content-type': 'application/x-ndjson' })
    res.flushHeaders() // the client knows at once that the command runs
    const line = async (obj: unknown): Promise<void> => {
      if (res.destroyed || res.writableEnded) return // nobody to tell
      if (!res.write(JSON.stringify(obj) + '\n')) {
        await new Promise<void>(resolve => {
          const done = (): void => { res.off('drain', done); res.off('close', done); resolve() }
          res.once('drain', done)
          res.once('close', done)
        })
      }
    }
    const started = Date.now()
    log.info('running command for a client')
    const finished = this.components.run(argv, {
      stdout: async (data) => { await line({ out: Buffer.from(data).toString('base64') }) },
      stderr: (text) => { void line({ err: text }) },
      signal: ac.signal
    }).catch(async (err: Error) => {
      await line({ err: `${err.message}\n` })
      return 1
    }).then(async (code) => {
      ended = true
      log.info({ exit: code, cancelled: ac.signal.aborted, ms: Date.now() - started }, 'command ended')
      await line({ exit: code })
      res.end()
    }, () => {}).finally(() => this.running.delete(finished))
    this.running.add(finished)
  }

  async stop (): Promise<void> {
    await rm(join(this.options.repo, API_FILE), { force: true })
    const server = this.server
    if (server == null) return
    this.server = undefined
    this.stopping = true
    server.closeAllConnections() // cancels the running commands: their clients are gone
    await new Promise<void>(resolve => server.close(() => resolve()))
    await rm(this.options.address, { force: true })
    if (this.running.size > 0) {
      let timer: NodeJS.Timeout | undefined
      const waited = await Promise.race([
        Promise.allSettled([...this.running]).then(() => true),
        new Promise<false>(resolve => { timer = setTimeout(() => resolve(false), DEFAULTS.stopWaitMs) })
      ])
      clearTimeout(timer)
      if (!waited) this.components.logger.warn({ commands: this.running.size }, 'commands still running at stop')
    }
  }
}

/** Is a daemon answering on this control socket? */
export async function daemonAlive (address: string): Promise<boolean> {
  return await answersOnSocket(address, '/v1/health')
}

/** What a daemon's health route answers: its root is the repo it serves. */
export interface DaemonHealth {
  ok: true
  root: string
}

export type DaemonProbe =
  | { state: 'up', root: string }
  /** No socket there: no daemon was started with this address (or it stopped cleanly). */
  | { state: 'absent' }
  /** A socket, but no daemon answers (it died: kill -9, a crash; or it hangs), or we may not connect. */
  | { state: 'down', why: string }

/** Asks the daemon on a control socket who it is. */
export async function probeDaemon (address: string, timeoutMs: number = DEFAULTS.healthTimeoutMs): Promise<DaemonProbe> {
  return await new Promise(resolve => {
    const req = request({ socketPath: address, path: '/v1/health', method: 'GET', agent: false }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (s: string) => { if (text.length < 65536) text += s })
      res.on('error', (err) => resolve({ state: 'down', why: err.message }))
      res.on('end', () => {
        clearTimeout(timer)
        let root: unknown
        try { root = (JSON.parse(text) as Partial<DaemonHealth>).root } catch {}
        if (res.statusCode === 200 && typeof root === 'string' && root !== '') resolve({ state: 'up', root })
        else resolve({ state: 'down', why: `its health route answered HTTP ${String(res.statusCode)} without a root` })
      })
    })
    const timer = setTimeout(() => req.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })), timeoutMs)
    req.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      if (err.code === 'ENOENT') resolve({ state: 'absent' })
      else resolve({ state: 'down', why: err.code === 'ECONNREFUSED' ? 'nothing listens on the socket: the daemon died?' : err.message })
    })
    req.end()
  })
}

/** A daemon the CLI was pointed at (or whose socket it found) does not answer: it never falls back to another repo. */
export class DaemonUnreachableError extends Error {
  static readonly code = 'ERR_DAEMON_UNREACHABLE'
  readonly code = DaemonUnreachableError.code
  override readonly name = 'DaemonUnreachableError'
}

/** The daemon went away (killed, crashed, stopped) before the command it ran for us ended. */
export class DaemonDisconnectedError extends Error {
  static readonly code = 'ERR_DAEMON_DISCONNECTED'
  readonly code = DaemonDisconnectedError.code
  override readonly name = 'DaemonDisconnectedError'
  constructor (why: string) {
    super(`the daemon closed the connection mid-command (${why})`)
  }
}

/** The daemon answered something that is not the control protocol. */
export class ControlProtocolError extends Error {
  static readonly code = 'ERR_CONTROL_PROTOCOL'
  readonly code = ControlProtocolError.code
  override readonly name = 'ControlProtocolError'
}

/** We cancelled the command (Ctrl-C): the daemon stops it when it sees us go. */
export class CommandCancelledError extends Error {
  static readonly code = 'ABORT_ERR'
  readonly code = CommandCancelledError.code
  override readonly name = 'AbortError'
  constructor () {
    super('cancelled: the daemon stops the command')
  }
}

export interface RunInDaemonOptions {
  signal?: AbortSignal
  /** Exit code to end with when our stdout's reader went away (`| head`): we stop quietly. */
  stdoutClosedCode: number
}

/**
 * Runs a command in the daemon, streaming its output to ours; resolves with its exit code. Every
 * failure of the connection rejects with a typed error (never an unhandled stream error); when
 * our stdout's reader goes away we hang up, which cancels the command in the daemon.
 */
export async function runInDaemon (address: string, argv: string[], options: RunInDaemonOptions): Promise<number> {
  const { signal } = options
  return await new Promise((resolve, reject) => {
    let settled = false
    const finish = (err: Error | undefined, code = 1): void => {
      if (settled) return
      settled = true
      process.stdout.off('error', onStdoutError)
      signal?.removeEventListener('abort', onAbort)
      if (err != null) reject(err)
      else resolve(code)
    }
    const onStdoutError = (): void => {
      req.destroy()
      finish(undefined, options.stdoutClosedCode)
    }
    const onAbort = (): void => {
      req.destroy()
      finish(new CommandCancelledError())
    }
    const req = request({ socketPath: address, path: '/v1/run', method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      if (res.statusCode !== 200) {
        res.resume()
        finish(new ControlProtocolError(`daemon refused the command (HTTP ${String(res.statusCode)})`))
        return
      }
      let buf = ''
      let code: number | undefined
      res.setEncoding('utf8')
      res.on('data', (s: string) => {
        buf += s
        let i: number
        while ((i = buf.indexOf('\n')) >= 0) {
          let msg: { out?: string, err?: string, exit?: number }
          try {
            msg = JSON.parse(buf.slice(0, i)) as typeof msg
          } catch {
            req.destroy()
            finish(new ControlProtocolError(`the daemon sent a line that is not JSON: ${JSON.stringify(buf.slice(0, Math.min(i, 80)))}`))
            return
          }
          buf = buf.slice(i + 1)
          if (msg.out != null && !process.stdout.destroyed) process.stdout.write(Buffer.from(msg.out, 'base64'))
          if (msg.err != null) process.stderr.write(msg.err)
          if (msg.exit != null) code = msg.exit
        }
      })
      res.on('error', (err) => { finish(new DaemonDisconnectedError(err.message)) })
      // 'close' comes after 'end' too: only the exit line says the command ended
      res.on('close', () => {
        if (code != null) finish(undefined, code)
        else finish(new DaemonDisconnectedError('no exit code'))
      })
    })
    process.stdout.on('error', onStdoutError)
    if (signal?.aborted === true) onAbort()
    else signal?.addEventListener('abort', onAbort, { once: true })
    req.on('error', (err) => { finish(new DaemonDisconnectedError(err.message)) })
    req.end(JSON.stringify({ argv }))
  })
}
