import { spawn } from 'node:child_process'
import type { Logger } from '../logging.js'

/**
 * systemd's readiness protocol (`Type=notify`): a datagram such as `READY=1` sent to the unix
 * socket named by `$NOTIFY_SOCKET`. Node has no unix datagram sockets, so the message is sent by
 * `systemd-notify`, a child process: the unit says `NotifyAccess=all` for that reason. Without
 * `--no-block`, systemd-notify waits until the manager has read the message, so the child's
 * exit cannot race the manager's look-up of who sent it.
 */
export const DEFAULTS = {
  /** the program that sends the message */
  command: 'systemd-notify',
  /** a notification that has not gone out after this long is given up (and logged) */
  timeoutMs: 10_000
}

export interface SdNotifier {
  /** READY=1, with MAINPID and a status line; resolves whether the message was sent */
  ready: (status: string) => Promise<boolean>
  /** STOPPING=1 */
  stopping: () => Promise<boolean>
}

/**
 * A notifier for this process, or a no-op one when `$NOTIFY_SOCKET` is unset (not started by
 * systemd with `Type=notify`). It takes the socket out of `process.env`, as sd_notify's
 * `unset_environment` does, so the processes the daemon starts (the FUSE manager, runc,
 * sandboxes) do not inherit it and cannot speak for the service.
 */
export function sdNotifier (components: { logger: Logger }, options: Partial<typeof DEFAULTS> = {}): SdNotifier {
  const o = { ...DEFAULTS, ...options }
  const socket = process.env.NOTIFY_SOCKET
  delete process.env.NOTIFY_SOCKET
  const send = async (args: string[]): Promise<boolean> => {
    if (socket == null || socket === '') return false
    return await new Promise<boolean>((resolve) => {
      const child = spawn(o.command, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, NOTIFY_SOCKET: socket }, timeout: o.timeoutMs, killSignal: 'SIGKILL' })
      let err = ''
      child.stderr.on('data', (d: Buffer) => { err = (err + d.toString()).slice(-2000) })
      child.on('error', (e) => {
        components.logger.warn({ err: e.message, command: o.command }, 'cannot tell systemd the service state')
        resolve(false)
      })
      child.on('close', (code, signal) => {
        if (code === 0) return resolve(true)
        components.logger.warn({ code, signal, stderr: err.trim(), args }, 'systemd-notify failed: systemd was not told the service state')
        resolve(false)
      })
    })
  }
  return {
    ready: async (status) => await send(['--ready', `--pid=${process.pid}`, `--status=${status}`]),
    stopping: async () => await send(['STOPPING=1'])
  }
}
