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

/** `mount` could not fetch the image's index, manifest and config within `--open-timeout`: no peer has the CID. */
export class MountOpenTimeoutError extends CliError { static readonly code = 'ERR_MOUNT_OPEN_TIMEOUT' }

/** `image inspect` could not fetch the image's index, manifest and config within `--timeout`. */
export class NoPeerHasCidError extends CliError { static readonly code = 'ERR_NO_PEER_HAS_CID' }

/** A command that only reads a repo was pointed at a folder that holds none (a typo in `--repo`): nothing is created. */
export class NoRepoError extends CliError {
  static readonly code = 'ERR_NO_REPO'
  constructor (readonly repo: string, options?: ErrorOptions) {
    super(`no repo at ${repo} (check --repo or $IPFS_ESTARGZ_PATH; \`push\`, \`pull\` or \`import\` create one)`, options)
  }
}

/** What the timeout an image's metadata must arrive within says when it fires. */
export function noPeerHasCid (cid: string, seconds: number, peers: number): string {
  return `no peer has CID ${cid}: the image's index, manifest and config did not arrive within ${seconds} s (${peers} peer${peers === 1 ? '' : 's'} connected)`
}

/** Parses a non-negative integer option (`--chunk-size 4194304`, `--offset 0`). */
export function parseNonNegativeInt (what: string): (value: string) => number {
  return (value: string): number => {
    if (!/^\d+$/.test(value)) throw new UsageError(`${what} must be a non-negative integer, got ${JSON.stringify(value)}`)
    const n = Number(value)
    if (!Number.isSafeInteger(n)) throw new UsageError(`${what} is too large: ${value}`)
    return n
  }
}

/** A command that needs root (mounts: FUSE, overlayfs, bind mounts) was run by another user. */
export class NotRootError extends CliError { static readonly code = 'ERR_NOT_ROOT' }

/** What a permission error tells a user who is not root. */
export const RUN_AS_ROOT = 'run it as root (sudo ipfs-estargz …)'

/** Throws NotRootError unless this process runs as root. */
export function requireRoot (what: string): void {
  if (process.getuid?.() !== 0) throw new NotRootError(`${what} needs root: ${RUN_AS_ROOT}`)
}

/**
 * One line for the terminal: the message, and the stable code when the error has one. A
 * permission error (Node's EACCES/EPERM: a repo, socket or mount of root's) seen by a user who is
 * not root says to run as root.
 */
export function describeError (err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code
    const msg = err.message.split('\n')[0]
    const line = typeof code === 'string' && !(err instanceof UsageError) && !msg.includes(code) ? `${msg} (${code})` : msg
    const denied = (code === 'EACCES' || code === 'EPERM') && process.getuid?.() !== 0
    return denied ? `${line}: ${RUN_AS_ROOT}` : line
  }
  return String(err)
}
