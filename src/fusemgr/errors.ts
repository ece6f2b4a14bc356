/**
 * Errors of the FUSE manager and its clients, each with a stable `code`.
 */

/** The manager refused or failed a call; `remoteCode` is the code of the error on its side. */
export class FuseManagerError extends Error {
  static readonly code: string = 'ERR_FUSE_MANAGER'
  readonly code: string = FuseManagerError.code
  override readonly name: string = 'FuseManagerError'
  constructor (message: string, readonly remoteCode?: string) {
    super(message)
  }
}

/** Nothing listens on the manager's socket (not started, or it died). */
export class FuseManagerUnavailableError extends FuseManagerError {
  static override readonly code = 'ERR_FUSE_MANAGER_UNAVAILABLE'
  override readonly code = FuseManagerUnavailableError.code
  override readonly name = 'FuseManagerUnavailableError'
  constructor (readonly socket: string) {
    super(`no FUSE manager answers on ${socket}`)
  }
}

/** No answer within the call's timeout (the connection is closed, so the manager cancels the call). */
export class FuseManagerTimeoutError extends FuseManagerError {
  static override readonly code = 'ERR_FUSE_MANAGER_TIMEOUT'
  override readonly code = FuseManagerTimeoutError.code
  override readonly name = 'FuseManagerTimeoutError'
}

/** The caller's signal ended the call (the connection is closed, so the manager cancels the call). */
export class FuseManagerCancelledError extends FuseManagerError {
  static override readonly code = 'ERR_FUSE_MANAGER_CANCELLED'
  override readonly code = FuseManagerCancelledError.code
  override readonly name = 'FuseManagerCancelledError'
}

/** The manager process did not come up. */
export class FuseManagerStartError extends FuseManagerError {
  static override readonly code = 'ERR_FUSE_MANAGER_START'
  override readonly code = FuseManagerStartError.code
  override readonly name = 'FuseManagerStartError'
}

/** The manager has no daemon to read layer bytes from (none attached, or it is away too long). */
export class BlobSourceUnavailableError extends Error {
  static readonly code = 'ERR_BLOB_SOURCE_UNAVAILABLE'
  readonly code = BlobSourceUnavailableError.code
  override readonly name = 'BlobSourceUnavailableError'
}

/** The daemon's blob API answered with an error (unknown CID, read past the end, timeout...). */
export class BlobReadError extends Error {
  static readonly code = 'ERR_BLOB_READ'
  readonly code = BlobReadError.code
  override readonly name = 'BlobReadError'
  constructor (message: string, readonly status: number) {
    super(message)
  }
}
