import { IpfsEstargzError } from '../errors.js'

/** Errors of the command line itself (the pattern is in src/errors.ts). */
export abstract class CliError extends IpfsEstargzError {}

/** A mistake in how a command was called (exit code 2, like commander's own usage errors). */
export class UsageError extends CliError { static readonly code = 'ERR_USAGE' }

/** Our stdout's reader went away (EPIPE): the command stops, nothing is printed. */
export class StdoutClosedError extends CliError {
  static readonly code = 'ERR_STDOUT_CLOSED'
  constructor (options?: ErrorOptions) {
    super('stdout was closed', options)
  }
}

/** `umount` signalled the mount process, which did not exit in time: its mounts are left in place. */
export class UmountTimeoutError extends CliError {
  static readonly code = 'ERR_UMOUNT_TIMEOUT'
  constructor (readonly pid: number, options?: ErrorOptions) {
    super(`mount process ${pid} did not exit; its mounts are left in place`, options)
  }
}

/** `mount` could not fetch the image's index, manifest and config within `--open-timeout`. */
export class MountOpenTimeoutError extends CliError { static readonly code = 'ERR_MOUNT_OPEN_TIMEOUT' }

/** Parses a non-negative integer option (`--chunk-size 4194304`, `--offset 0`). */
export function parseNonNegativeInt (what: string): (value: string) => number {
  return (value: string): number => {
    if (!/^\d+$/.test(value)) throw new UsageError(`${what} must be a non-negative integer, got ${JSON.stringify(value)}`)
    const n = Number(value)
    if (!Number.isSafeInteger(n)) throw new UsageError(`${what} is too large: ${value}`)
    return n
  }
}

/** One line for the terminal: the message, and the stable code when the error has one. */
export function describeError (err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code
    const msg = err.message.split('\n')[0]
    return typeof code === 'string' && !(err instanceof UsageError) && !msg.includes(code) ? `${msg} (${code})` : msg
  }
  return String(err)
}
