/**
 * Errors of the IPFS layer, each with a stable `code` (same pattern as src/estargz/errors.ts).
 */
export abstract class IpfsError extends Error {
  abstract readonly code: string
}

/** Another process (or another node in this process) has the repo open. */
export class RepoLockedError extends IpfsError {
  static readonly code = 'ERR_REPO_LOCKED'
  readonly code = RepoLockedError.code
  override readonly name = 'RepoLockedError'
  constructor (readonly repo: string, readonly pid: number) {
    super(`repo ${repo} is in use by process ${pid} (stop it, or talk to its daemon)`)
  }
}

/** A CAR file is malformed, truncated, or holds a block whose bytes do not match its CID. */
export class InvalidCarError extends IpfsError {
  static readonly code = 'ERR_INVALID_CAR'
  readonly code = InvalidCarError.code
  override readonly name = 'InvalidCarError'
}

/** A block's bytes do not hash to its CID. */
export class BlockDigestMismatchError extends IpfsError {
  static readonly code = 'ERR_BLOCK_DIGEST_MISMATCH'
  readonly code = BlockDigestMismatchError.code
  override readonly name = 'BlockDigestMismatchError'
  constructor (readonly cid: string) {
    super(`block ${cid}: bytes do not match the CID`)
  }
}

/** A block the operation needs is not available (not local, or not in the CAR). */
export class BlockNotFoundError extends IpfsError {
  static readonly code = 'ERR_BLOCK_NOT_FOUND'
  readonly code = BlockNotFoundError.code
  override readonly name = 'BlockNotFoundError'
  constructor (readonly cid: string, where = 'the blockstore') {
    super(`block ${cid} is not in ${where}`)
  }
}

/** A CID does not point at what the caller expects (a UnixFS file, a directory, ...). */
export class UnexpectedDagError extends IpfsError {
  static readonly code = 'ERR_UNEXPECTED_DAG'
  readonly code = UnexpectedDagError.code
  override readonly name = 'UnexpectedDagError'
}

/** A path in a UnixFS directory does not exist. */
export class PathNotFoundError extends IpfsError {
  static readonly code = 'ERR_PATH_NOT_FOUND'
  readonly code = PathNotFoundError.code
  override readonly name = 'PathNotFoundError'
  constructor (readonly root: string, readonly path: string) {
    super(`${path} not found under ${root}`)
  }
}

/** An image cannot be listed because some block it references is not stored locally. */
export class IncompleteImageError extends IpfsError {
  static readonly code = 'ERR_INCOMPLETE_IMAGE'
  readonly code = IncompleteImageError.code
  override readonly name = 'IncompleteImageError'
  constructor (readonly root: string, readonly missing: string) {
    super(`image ${root} is incomplete: block ${missing} is not stored locally`)
  }
}

/** An option is outside its valid range. */
export class InvalidIpfsOptionError extends IpfsError {
  static readonly code = 'ERR_INVALID_OPTION'
  readonly code = InvalidIpfsOptionError.code
  override readonly name = 'InvalidIpfsOptionError'
}

/** A read took longer than its per-read timeout. */
export class ReadTimeoutError extends IpfsError {
  static readonly code = 'ERR_READ_TIMEOUT'
  readonly code = ReadTimeoutError.code
  override readonly name = 'ReadTimeoutError'
}

/** The operation was aborted through its AbortSignal. */
export class AbortError extends IpfsError {
  static readonly code = 'ABORT_ERR'
  readonly code = AbortError.code
  override readonly name = 'AbortError'
  constructor (message = 'the operation was aborted') {
    super(message)
  }
}

/** A block-exchange peer broke the wire format (malformed or oversized request or response). */
export class BlockExchangeProtocolError extends IpfsError {
  static readonly code = 'ERR_BLOCK_EXCHANGE_PROTOCOL'
  readonly code = BlockExchangeProtocolError.code
  override readonly name = 'BlockExchangeProtocolError'
}

/** A block-exchange peer sent nothing for longer than the request timeout. */
export class BlockExchangeTimeoutError extends IpfsError {
  static readonly code = 'ERR_BLOCK_EXCHANGE_TIMEOUT'
  readonly code = BlockExchangeTimeoutError.code
  override readonly name = 'BlockExchangeTimeoutError'
}

/**
 * The disk (or the user's quota) is full: a write under the repo failed with ENOSPC or EDQUOT.
 * The write's temp file is removed; blocks stored before it stay until a GC.
 */
export class NoSpaceError extends IpfsError {
  static readonly code = 'ERR_NO_SPACE'
  readonly code = NoSpaceError.code
  override readonly name = 'NoSpaceError'
  constructor (readonly path: string, readonly errno: string) {
    super(`no space left to write ${path} (${errno}): free some space on its filesystem`)
  }
}

const SPACE_ERRNOS = ['ENOSPC', 'EDQUOT']

/**
 * The space error behind `err`, if any: a Node errno, or the text of one that a store wrapped
 * into its own error (blockstore-fs and datastore-fs keep only `String(err)`), or SQLite's "full".
 */
export function spaceErrno (err: unknown): string | undefined {
  const e = err as { code?: unknown, message?: unknown } | undefined
  if (typeof e?.code === 'string' && SPACE_ERRNOS.includes(e.code)) return e.code
  if (e?.code === 'SQLITE_FULL') return 'ENOSPC'
  const text = typeof e?.message === 'string' ? e.message : String(err)
  return SPACE_ERRNOS.find(c => text.includes(c))
}
