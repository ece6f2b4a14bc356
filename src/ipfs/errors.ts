import { IpfsEstargzError } from '../errors.js'

/**
 * Errors of the IPFS layer, one class per failure (the pattern is in src/errors.ts).
 */
export abstract class IpfsError extends IpfsEstargzError {}

// Thrown here too; exported so that this module's users find them beside its own errors.
export { AbortError, InvalidOptionError } from '../errors.js'

/** Another process (or another node in this process) has the repo open. */
export class RepoLockedError extends IpfsError {
  static readonly code = 'ERR_REPO_LOCKED'
  constructor (readonly repo: string, readonly pid: number, options?: ErrorOptions) {
    super(`repo ${repo} is in use by process ${pid} (stop it, or talk to its daemon)`, options)
  }
}

/** A block's bytes do not hash to its CID. */
export class BlockDigestMismatchError extends IpfsError {
  static readonly code = 'ERR_BLOCK_DIGEST_MISMATCH'
  constructor (readonly cid: string, options?: ErrorOptions) {
    super(`block ${cid}: bytes do not match the CID`, options)
  }
}

/** A block the operation needs is not available (not local, and no peer or gateway has it). */
export class BlockNotFoundError extends IpfsError {
  static readonly code = 'ERR_BLOCK_NOT_FOUND'
  constructor (readonly cid: string, where = 'the blockstore', options?: ErrorOptions) {
    super(`block ${cid} is not in ${where}`, options)
  }
}

/** A CID does not point at what the caller expects (a UnixFS file, a directory, ...). */
export class UnexpectedDagError extends IpfsError { static readonly code = 'ERR_UNEXPECTED_DAG' }

/** A path in a UnixFS directory does not exist. */
export class PathNotFoundError extends IpfsError {
  static readonly code = 'ERR_PATH_NOT_FOUND'
  constructor (readonly root: string, readonly path: string, options?: ErrorOptions) {
    super(`${path} not found under ${root}`, options)
  }
}

/** An image cannot be listed because some block it references is not stored locally. */
export class IncompleteImageError extends IpfsError {
  static readonly code = 'ERR_INCOMPLETE_IMAGE'
  constructor (readonly root: string, readonly missing: string, options?: ErrorOptions) {
    super(`image ${root} is incomplete: block ${missing} is not stored locally`, options)
  }
}

/** A reference that is not `ipfs://CID`, `/ipfs/CID` or a bare CID. */
export class InvalidIpfsReferenceError extends IpfsError {
  static readonly code = 'ERR_BAD_IPFS_REF'
  constructor (readonly ref: string, options?: ErrorOptions) {
    super(`not an IPFS reference: ${JSON.stringify(ref)} (want ipfs://CID, /ipfs/CID or a CID)`, options)
  }
}

/** A command run by a daemon names a repo other than the one the daemon serves: it never opens a second one. */
export class RepoMismatchError extends IpfsError {
  static readonly code = 'ERR_REPO_MISMATCH'
  constructor (readonly served: string, readonly asked: string, options?: ErrorOptions) {
    super(`the daemon serves the repo ${served}, not ${asked}`, options)
  }
}

/** A gateway answered a block larger than the gateway stage accepts (`maxBlockSize`): the next gateway is asked. */
export class GatewayBlockTooLargeError extends IpfsError { static readonly code = 'ERR_GATEWAY_BLOCK_TOO_LARGE' }

/** A read took longer than its per-read timeout. */
export class ReadTimeoutError extends IpfsError { static readonly code = 'ERR_READ_TIMEOUT' }

/** A block-exchange peer broke the wire format (malformed or oversized request or response). */
export class BlockExchangeProtocolError extends IpfsError { static readonly code = 'ERR_BLOCK_EXCHANGE_PROTOCOL' }

/** A block-exchange peer sent nothing for longer than the request timeout. */
export class BlockExchangeTimeoutError extends IpfsError { static readonly code = 'ERR_BLOCK_EXCHANGE_TIMEOUT' }

/**
 * The disk (or the user's quota) is full: a write under the repo failed with ENOSPC or EDQUOT.
 * The write's temp file is removed; blocks stored before it stay until a GC.
 */
export class NoSpaceError extends IpfsError {
  static readonly code = 'ERR_NO_SPACE'
  constructor (readonly path: string, readonly errno: string, options?: ErrorOptions) {
    super(`no space left to write ${path} (${errno}): free some space on its filesystem`, options)
  }
}

const SPACE_ERRNOS = ['ENOSPC', 'EDQUOT']

/**
 * The space error behind `err`, if any: a Node errno, or the text of one that a store wrapped
 * into its own error (blockstore-fs and datastore-fs keep only `String(err)`), or SQLite's "full".
 * None of these errors is ours: their codes and text are all there is to go by.
 */
export function spaceErrno (err: unknown): string | undefined {
  const e = err as { code?: unknown, message?: unknown } | undefined
  if (typeof e?.code === 'string' && SPACE_ERRNOS.includes(e.code)) return e.code
  if (e?.code === 'SQLITE_FULL') return 'ENOSPC'
  if (e?.code === 28) return 'ENOSPC' // lmdb-js: the errno as a number
  const text = typeof e?.message === 'string' ? e.message : String(err)
  return SPACE_ERRNOS.find(c => text.includes(c))
}

/**
 * `err` as a NoSpaceError on `path` when a full disk is behind it, else `err` as it is. lmdb-js
 * hangs the cause of a failed commit on its error as a promise nobody else awaits: it is handled
 * here, or it would end the process as an unhandled rejection.
 */
export function toSpaceError (err: unknown, path: string): unknown {
  ;(err as { commitError?: Promise<unknown> } | undefined)?.commitError?.catch(() => {})
  if (err instanceof NoSpaceError) return err
  const errno = spaceErrno(err)
  return errno != null ? new NoSpaceError(path, errno, { cause: err }) : err
}

/** A tag names an image root that is not listed in the repo (push or import it first). */
export class ImageNotListedError extends IpfsError {
  static readonly code = 'ERR_IMAGE_NOT_LISTED'
  constructor (readonly root: string, options?: ErrorOptions) {
    super(`image ${root} is not listed in this repo (push or import it first; \`image ls\` shows the listed ones)`, options)
  }
}

// The private swarm's key file (src/ipfs/swarm-key.ts): the node refuses to start without a good one.

/** The swarm key file cannot be read (missing, a directory, no permission). */
export class SwarmKeyUnreadableError extends IpfsError { static readonly code = 'ERR_SWARM_KEY_UNREADABLE' }

/** The swarm key file is not a v1 key: `/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex digits, one a line. */
export class SwarmKeyMalformedError extends IpfsError { static readonly code = 'ERR_SWARM_KEY_MALFORMED' }

/** The swarm key file may be read or written by other users (its group or others have permissions). */
export class SwarmKeyPermissionsError extends IpfsError { static readonly code = 'ERR_SWARM_KEY_PERMISSIONS' }

// Pins and garbage collection (src/ipfs/pins.ts, src/ipfs/gc.ts).

/** `pin rm` (or `pin ls CID`) of a CID that has no pin. */
export class PinNotFoundError extends IpfsError {
  static readonly code = 'ERR_PIN_NOT_FOUND'
  constructor (readonly cid: string, options?: ErrorOptions) {
    super(`${cid} is not pinned (\`pin ls\` lists the pins)`, options)
  }
}

/** `image rm` of a CID or name that is neither listed nor pinned in this repo. */
export class ImageNotInRepoError extends IpfsError {
  static readonly code = 'ERR_IMAGE_NOT_IN_REPO'
  constructor (readonly ref: string, options?: ErrorOptions) {
    super(`no image ${JSON.stringify(ref)} in this repo (\`image ls\` and \`pin ls\` show what is there)`, options)
  }
}

/** A name given to `image rm` names several listed images: name one by its root CID. */
export class AmbiguousImageError extends IpfsError {
  static readonly code = 'ERR_AMBIGUOUS_IMAGE'
  constructor (readonly ref: string, readonly roots: string[], options?: ErrorOptions) {
    super(`${JSON.stringify(ref)} names ${roots.length} images (${roots.join(', ')}): remove one by its root CID`, options)
  }
}
