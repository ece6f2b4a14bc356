import { IpfsEstargzError } from '../errors.js'

/**
 * Errors of the FUSE manager, its client, and the blob client it reads layers through: one class
 * per failure (the pattern is in src/errors.ts).
 */
export abstract class FusemgrError extends IpfsEstargzError {}

// The client's side: a call to the manager failed.

/**
 * The manager refused or failed a call. On the daemon's side `remoteCode` is the code the manager
 * answered with and `status` its HTTP status. The manager throws it too, with the status to
 * answer, for a call it refuses that has no error of its own below (a missing field, no such
 * route, not running): those answer this code.
 */
export class FuseManagerError extends FusemgrError {
  static readonly code: string = 'ERR_FUSE_MANAGER'
  readonly remoteCode?: string
  readonly status?: number
  constructor (message: string, answer: { remoteCode?: string, status?: number } = {}, options?: ErrorOptions) {
    super(message, options)
    this.remoteCode = answer.remoteCode
    this.status = answer.status
  }
}

/** Nothing listens on the manager's socket (not started, or it died). */
export class FuseManagerUnavailableError extends FuseManagerError {
  static override readonly code = 'ERR_FUSE_MANAGER_UNAVAILABLE'
  constructor (readonly socket: string, options?: ErrorOptions) {
    super(`no FUSE manager answers on ${socket}`, {}, options)
  }
}

/** No answer within the call's timeout (the connection is closed, so the manager cancels the call). */
export class FuseManagerTimeoutError extends FuseManagerError { static override readonly code = 'ERR_FUSE_MANAGER_TIMEOUT' }

/** The caller's signal ended the call (the connection is closed, so the manager cancels the call). */
export class FuseManagerCancelledError extends FuseManagerError { static override readonly code = 'ERR_FUSE_MANAGER_CANCELLED' }

/** The manager process did not come up. */
export class FuseManagerStartError extends FuseManagerError { static override readonly code = 'ERR_FUSE_MANAGER_START' }

// The manager's side: what it answers a call with (the client sees the code as `remoteCode`).
// A body that is not JSON is the shared BadRequestError (src/errors.ts).

/** A call the manager refuses with a code of its own; `status` is the HTTP status it answers with. */
export abstract class CallRefusedError extends FusemgrError {
  abstract readonly status: number
}

/** The mountpoint already holds another layer. */
export class MountConflictError extends CallRefusedError {
  static readonly code = 'ERR_MOUNT_CONFLICT'
  readonly status = 409
}

/** No lazy layer is mounted at the mountpoint. */
export class NotMountedError extends CallRefusedError {
  static readonly code = 'ERR_NOT_MOUNTED'
  readonly status = 404
}

/** The mount was cancelled (its caller hung up, or an unmount of its mountpoint came): nothing is left mounted. */
export class MountCancelledError extends CallRefusedError {
  static readonly code = 'ERR_MOUNT_CANCELLED'
  readonly status = 499
}

// The blob client: the manager reading layer bytes from the daemon.

/** The manager has no daemon to read layer bytes from (none attached, or it is away too long). */
export class BlobSourceUnavailableError extends FusemgrError { static readonly code = 'ERR_BLOB_SOURCE_UNAVAILABLE' }

/** The daemon's blob API answered with an error (unknown CID, read past the end, timeout...): its status, and its code as `remoteCode`. */
export class BlobReadError extends FusemgrError {
  static readonly code = 'ERR_BLOB_READ'
  readonly status: number
  readonly remoteCode?: string
  constructor (message: string, answer: { status: number, remoteCode?: string }, options?: ErrorOptions) {
    super(message, options)
    this.status = answer.status
    this.remoteCode = answer.remoteCode
  }
}

/** The daemon closed the connection before the whole answer came (it went away mid-answer): the read waits for a daemon, as when none answers. */
export class BlobAnswerCutError extends FusemgrError { static readonly code = 'ERR_BLOB_ANSWER_CUT' }
