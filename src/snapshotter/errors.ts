import { status } from '@grpc/grpc-js'
import { IpfsEstargzError } from '../errors.js'

/**
 * Errors of the snapshotter, one class per failure (the pattern is in src/errors.ts), each with
 * the gRPC status containerd maps back to its errdefs (NotFound, AlreadyExists, ...). Messages
 * are one line and name the snapshot (and namespace) involved.
 */
export abstract class SnapshotterError extends IpfsEstargzError {
  abstract readonly grpcCode: status
}

/** No snapshot (or parent) with that key in the namespace. */
export class SnapshotNotFoundError extends SnapshotterError {
  static readonly code = 'ERR_SNAPSHOT_NOT_FOUND'
  readonly grpcCode = status.NOT_FOUND
}

/** A snapshot with that key already exists (also: a remote snapshot was committed as the target). */
export class SnapshotExistsError extends SnapshotterError {
  static readonly code = 'ERR_SNAPSHOT_EXISTS'
  readonly grpcCode = status.ALREADY_EXISTS
}

/** The operation does not fit the snapshot's state: commit of a non-active, remove with children, mounts of a committed. */
export class FailedPreconditionError extends SnapshotterError {
  static readonly code = 'ERR_FAILED_PRECONDITION'
  readonly grpcCode = status.FAILED_PRECONDITION
}

/** Bad request: parent not committed, unknown update field. */
export class InvalidArgumentError extends SnapshotterError {
  static readonly code = 'ERR_INVALID_ARGUMENT'
  readonly grpcCode = status.INVALID_ARGUMENT
}

/** A snapshot key, parent or commit name the service refuses: empty, too long, control characters, "." or ".." components. */
export class InvalidKeyError extends SnapshotterError {
  static readonly code = 'ERR_INVALID_KEY'
  readonly grpcCode = status.INVALID_ARGUMENT
}

/** A label over containerd's size limit (key + value bytes), or more labels than one call or snapshot may carry. */
export class InvalidLabelError extends SnapshotterError {
  static readonly code = 'ERR_INVALID_LABEL'
  readonly grpcCode = status.INVALID_ARGUMENT
}

/** A `containerd-namespace` that is not a containerd identifier. */
export class InvalidNamespaceError extends SnapshotterError {
  static readonly code = 'ERR_INVALID_NAMESPACE'
  readonly grpcCode = status.INVALID_ARGUMENT
}

/** A request over one of the service's size limits: too many or too long filters, too many Update paths. */
export class RequestTooLargeError extends SnapshotterError {
  static readonly code = 'ERR_REQUEST_TOO_LARGE'
  readonly grpcCode = status.INVALID_ARGUMENT
}

/** A List whose matching ran longer than its time budget (it is given up, not left running). */
export class ListTimeoutError extends SnapshotterError {
  static readonly code = 'ERR_LIST_TIMEOUT'
  readonly grpcCode = status.DEADLINE_EXCEEDED
}

/** A List filter that does not parse, or whose regexps compile to too large a program. */
export class InvalidFilterError extends SnapshotterError {
  static readonly code = 'ERR_INVALID_FILTER'
  readonly grpcCode = status.INVALID_ARGUMENT
}

/**
 * A `~=` pattern that does not compile, or whose program is over the allowed size. The filter
 * parser wraps it in an InvalidFilterError that says where in the filter it is.
 */
export class RegexpSyntaxError extends SnapshotterError {
  static readonly code = 'ERR_REGEXP_SYNTAX'
  readonly grpcCode = status.INVALID_ARGUMENT
}

/** A remote layer backing this snapshot (or an ancestor) is not mounted/healthy. */
export class UnavailableError extends SnapshotterError {
  static readonly code = 'ERR_UNAVAILABLE'
  readonly grpcCode = status.UNAVAILABLE
}

/** The snapshotter was used before `start()` or after `stop()`. */
export class NotStartedError extends SnapshotterError {
  static readonly code = 'ERR_NOT_STARTED'
  readonly grpcCode = status.UNAVAILABLE
}

// Why a remote snapshot cannot be mounted again at start (the cause of a RemountError, or logged).

/** Its mountpoint holds a mount that is not the lazy layer we keep (something else mounted there). */
export class MountpointBusyError extends SnapshotterError {
  static readonly code = 'ERR_MOUNTPOINT_BUSY'
  readonly grpcCode = status.FAILED_PRECONDITION
}

/** The snapshotter has no remote layer mounter to mount it with. */
export class NoRemoteMounterError extends SnapshotterError {
  static readonly code = 'ERR_NO_REMOTE_MOUNTER'
  readonly grpcCode = status.FAILED_PRECONDITION
}

/** Its labels name no IPFS layer (no `ipfs://` url, and the layer digest is not in the digest index). */
export class NoRemoteLayerError extends SnapshotterError {
  static readonly code = 'ERR_NO_REMOTE_LAYER'
  readonly grpcCode = status.FAILED_PRECONDITION
}

/** A remote snapshot could not be mounted again at start (and invalid mounts are not allowed). */
export class RemountError extends SnapshotterError {
  static readonly code = 'ERR_REMOUNT_FAILED'
  readonly grpcCode = status.INTERNAL
}
