import { chmod, rm, writeFile } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { join } from 'node:path'
import type { Logger } from '../logging.js'
import { BLOBS_PREFIX, type BlobReader } from './blob-api.js'
import { API_FILE, type DaemonHealth } from './control-client.js'

export * from './control-client.js'

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

