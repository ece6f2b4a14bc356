import type { IncomingMessage } from 'node:http'
import { AbortError } from '../errors.js'
import { DEFAULTS as HTTP_DEFAULTS, UnixHttpClient, type ClientErrors } from '../unix-http.js'
import { ControlProtocolError, DaemonDisconnectedError, DaemonHealthTimeoutError } from './errors.js'
import { anyOf } from '../signals.js'

/**
 * The CLI's side of the control API (src/daemon/control.ts): finding a daemon and running a
 * command in it. Kept apart from the server so the CLI loads only this before forwarding.
 */

/** Control API client defaults, in one place. */
export const CLIENT_DEFAULTS = {
  /** The CLI gives a daemon this long to answer its health route before calling it unreachable. */
  healthTimeoutMs: HTTP_DEFAULTS.probeTimeoutMs
} as const

/**
 * The control socket of a daemon started with the default addresses (`api.sock` next to the
 * default snapshotter socket): where the CLI looks for a daemon when no repo is named.
 */
export const DEFAULT_API_ADDRESS = '/run/ipfs-estargz/api.sock'

/** Environment variable naming a daemon's control socket (like Kubo's `IPFS_PATH` names the repo). */
export const API_ENV = 'IPFS_ESTARGZ_API'

/** File in the repo naming the control socket, so `--repo DIR` finds a running daemon. */
export const API_FILE = 'api'

/** The control API's routes (the blob routes are in blob-api.ts). */
export const ROUTES = {
  health: '/v1/health',
  run: '/v1/run'
} as const

/**
 * How calls to the control API fail. A refused command means a daemon that does not speak our
 * protocol; a connection that breaks means the daemon went away.
 */
const ERRORS: ClientErrors = {
  answered: (_call, answer) => new ControlProtocolError(`daemon refused the command (HTTP ${answer.status})`),
  // only health probes have a timeout: a command runs as long as it runs (Ctrl-C cancels it)
  timeout: (call) => new DaemonHealthTimeoutError(`no answer within ${call.timeoutMs} ms`),
  cancelled: () => new AbortError('cancelled: the daemon stops the command'),
  connection: (_call, err) => new DaemonDisconnectedError(err.message, { cause: err })
}

/** A client of the control socket at `address`: a connection per call (the CLI makes one or two). */
const clientOf = (address: string): UnixHttpClient => new UnixHttpClient(address, { agent: false, errors: ERRORS })

/** Is a daemon answering on this control socket? */
export async function daemonAlive (address: string): Promise<boolean> {
  return await clientOf(address).answers(ROUTES.health, CLIENT_DEFAULTS.healthTimeoutMs)
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
export async function probeDaemon (address: string, timeoutMs: number = CLIENT_DEFAULTS.healthTimeoutMs): Promise<DaemonProbe> {
  const client = new UnixHttpClient(address, {
    agent: false,
    errors: {
      answered: (_call, answer) => new ControlProtocolError(`its health route answered HTTP ${answer.status} without a root`),
      timeout: ERRORS.timeout,
      // the connection's own errors: they tell absent from down
      connection: (_call, err) => err
    }
  })
  let root: unknown
  try {
    root = (await client.json<Partial<DaemonHealth> | undefined>('GET', ROUTES.health, { timeoutMs }))?.root
  } catch (err) {
    if (err instanceof ControlProtocolError) return { state: 'down', why: err.message }
    const code = (err as NodeJS.ErrnoException).code
    // Node's errno: no socket there, or nothing listens on it
    if (code === 'ENOENT') return { state: 'absent' }
    return { state: 'down', why: code === 'ECONNREFUSED' ? 'nothing listens on the socket: the daemon died?' : (err as Error).message }
  }
  if (typeof root === 'string' && root !== '') return { state: 'up', root }
  return { state: 'down', why: 'its health route answered HTTP 200 without a root' }
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
  const stdoutGone = new AbortController()
  const onStdoutError = (): void => { stdoutGone.abort() }
  process.stdout.on('error', onStdoutError)
  const following = options.signal != null ? anyOf([options.signal, stdoutGone.signal]) : undefined
  const hangUp = following?.signal ?? stdoutGone.signal
  try {
    // the daemon draws progress lines (push) and tables (image ls) for a terminal, as the CLI would here
    const res = await clientOf(address).open('POST', ROUTES.run, { body: { argv, stdoutIsTTY: process.stdout.isTTY === true, stderrIsTTY: process.stderr.isTTY === true }, signal: hangUp, timeoutMs: 0 })
    return await relayOutput(res, hangUp)
  } catch (err) {
    if (stdoutGone.signal.aborted) return options.stdoutClosedCode
    throw err
  } finally {
    process.stdout.off('error', onStdoutError)
    following?.clear()
  }
}

/** Writes a run's NDJSON lines to our stdout and stderr; resolves with the exit line's code. */
async function relayOutput (res: IncomingMessage, signal: AbortSignal): Promise<number> {
  return await new Promise((resolve, reject) => {
    let settled = false
    const finish = (err: Error | undefined, code = 1): void => {
      if (settled) return
      settled = true
      signal.removeEventListener('abort', onAbort)
      if (err != null) reject(err)
      else resolve(code)
    }
    const onAbort = (): void => {
      res.destroy()
      finish(new AbortError('cancelled: the daemon stops the command'))
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
          res.destroy()
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
    if (signal.aborted) onAbort()
    else signal.addEventListener('abort', onAbort, { once: true })
  })
}
