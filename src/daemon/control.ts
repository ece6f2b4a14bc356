import { rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { BadRequestError } from '../errors.js'
import type { Logger } from '../logging.js'
import { serveUnixHttp, type Call, type Route, type UnixHttpServer } from '../unix-http.js'
import type { BlobReader } from './blob-api.js'
import { API_FILE, ROUTES, type DaemonHealth } from './control-client.js'
import { ControlApiError } from './errors.js'

export * from './control-client.js'

/**
 * The control API: a unix socket on which the daemon runs CLI commands for clients, with its
 * own open repo (like Kubo: while a daemon owns a repo, the CLI talks to it instead of opening
 * the repo). `POST /v1/run` takes `{ argv, stdoutIsTTY?, stderrIsTTY? }` and answers with NDJSON lines:
 * `{ "out": base64 }`, `{ "err": text }`, and finally `{ "exit": code }`; a client that hangs up
 * cancels its command (its `signal` fires), a response without the exit line means the daemon
 * went away (`runInDaemon` says so in a DaemonDisconnectedError). With a `blobs` component
 * it also serves `GET /v1/blobs/...`, the byte ranges the FUSE manager's mounts read. Errors
 * answer the one error body of src/unix-http.ts (`{ error, code }`).
 */
export type CommandRunner = (argv: string[], io: { stdout: (data: Uint8Array | string) => Promise<void>, stderr: (text: string) => void, signal: AbortSignal, stdoutIsTTY?: boolean, stderrIsTTY?: boolean }) => Promise<number>

/** Control API defaults, in one place. */
export const DEFAULTS = {
  /**
   * At stop, commands still running are cancelled; this long they may take to clean up (remove
   * temp dirs, stop writing) before the daemon closes the repo under them.
   */
  stopWaitMs: 10_000
} as const

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

/** The argv of a run call's body: a list of strings. */
function argvOf (body: unknown): string[] {
  const argv = (body as { argv?: unknown } | null | undefined)?.argv
  if (!Array.isArray(argv) || argv.some(a => typeof a !== 'string')) throw new BadRequestError('argv must be a list of strings')
  return argv as string[]
}

/** Whether the client's stdout and stderr are terminals (it draws tables and progress lines for them). */
function ttyOf (body: unknown): { stdoutIsTTY: boolean, stderrIsTTY: boolean } {
  const b = body as { stdoutIsTTY?: unknown, stderrIsTTY?: unknown } | null | undefined
  return { stdoutIsTTY: b?.stdoutIsTTY === true, stderrIsTTY: b?.stderrIsTTY === true }
}

export class ControlServer {
  private http?: UnixHttpServer
  /** Commands run so far: numbers them in the log. */
  private commands = 0
  /** Commands still running. */
  private readonly running = new Set<Promise<void>>()
  private stopping = false

  constructor (private readonly components: { logger: Logger, run: CommandRunner, blobs?: BlobReader }, private readonly options: { address: string, repo: string }) {}

  async start (): Promise<void> {
    const routes: Route[] = [
      { method: 'GET', path: ROUTES.health, handle: (): DaemonHealth => ({ ok: true, root: this.options.repo }) },
      { method: 'POST', path: ROUTES.run, stream: true, handle: (call) => { this.runForClient(argvOf(call.body), call, ttyOf(call.body)) } },
      ...(this.components.blobs?.routes() ?? [])
    ]
    this.http = await serveUnixHttp(routes, {
      socket: this.options.address,
      code: ControlApiError.code,
      statusOf: (err) => err instanceof ControlApiError ? err.status : undefined
    })
    await writeFile(join(this.options.repo, API_FILE), this.options.address, { mode: 0o600 })
  }

  /**
   * Runs one command and streams its output. The command is cancelled (its signal fires) as soon
   * as the client goes away: Ctrl-C or kill -9 of the CLI, or the daemon stopping. The socket's
   * 'close' is seen whether or not anything was written yet (a push writes nothing for minutes):
   * the call's signal says so.
   */
  private runForClient (argv: string[], { res, signal }: Call, tty: { stdoutIsTTY: boolean, stderrIsTTY: boolean }): void {
    const log = this.components.logger.child({ command: ++this.commands, argv: loggable(argv) })
    let ended = false
    signal.addEventListener('abort', () => {
      if (!ended) log.warn(this.stopping ? 'the daemon stops: cancelling the command' : 'the client went away: cancelling the command')
    }, { once: true })
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
      signal,
      ...tty
    }).catch(async (err: Error) => {
      await line({ err: `${err.message}\n` })
      return 1
    }).then(async (code) => {
      ended = true
      log.info({ exit: code, cancelled: signal.aborted, ms: Date.now() - started }, 'command ended')
      await line({ exit: code })
      res.end()
    }, () => {}).finally(() => this.running.delete(finished))
    this.running.add(finished)
  }

  async stop (): Promise<void> {
    await rm(join(this.options.repo, API_FILE), { force: true })
    const http = this.http
    if (http == null) return
    this.http = undefined
    this.stopping = true
    await http.close() // cancels the running commands: their clients are gone
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

