import { request } from 'node:http'
import { AbortError } from '../errors.js'
import { answersOnSocket } from '../unix-http.js'
import { ControlProtocolError, DaemonDisconnectedError, DaemonHealthTimeoutError } from './errors.js'

/**
 * The CLI's side of the control API (src/daemon/control.ts): finding a daemon and running a
 * command in it. Kept apart from the server so the CLI loads only this before forwarding.
 */

/** Control API client defaults, in one place. */
export const CLIENT_DEFAULTS = {
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

/** File in the repo naming the control socket, so `--repo DIR` finds a running daemon. */
export const API_FILE = 'api'

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
export async function probeDaemon (address: string, timeoutMs: number = CLIENT_DEFAULTS.healthTimeoutMs): Promise<DaemonProbe> {
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
    const timer = setTimeout(() => req.destroy(new DaemonHealthTimeoutError(`no answer within ${timeoutMs} ms`)), timeoutMs)
    req.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      // Node's errno: no socket there, or nothing listens on it
      if (err.code === 'ENOENT') resolve({ state: 'absent' })
      else resolve({ state: 'down', why: err.code === 'ECONNREFUSED' ? 'nothing listens on the socket: the daemon died?' : err.message })
    })
    req.end()
  })
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
      finish(new AbortError('cancelled: the daemon stops the command'))
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
