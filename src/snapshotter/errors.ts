import { status } from '@grpc/grpc-js'

/**
 * One error class per failure, each with a stable `code` and the gRPC status containerd maps
 * back to its errdefs (NotFound, AlreadyExists, ...). Messages are one line and name the
 * snapshot (and namespace) involved.
 */
export abstract class SnapshotterError extends Error {
  abstract readonly code: string
  abstract readonly grpcCode: status
}

/** No snapshot (or parent) with that key in the namespace. */
export class SnapshotNotFoundError extends SnapshotterError {
  static readonly code = 'ERR_SNAPSHOT_NOT_FOUND'
  readonly code = SnapshotNotFoundError.code
  readonly grpcCode = status.NOT_FOUND
  override readonly name = 'SnapshotNotFoundError'
}

/** A snapshot with that key already exists (also: a remote snapshot was committed as the target). */
export class SnapshotExistsError extends SnapshotterError {
  static readonly code = 'ERR_SNAPSHOT_EXISTS'
  readonly code = SnapshotExistsError.code
  readonly grpcCode = status.ALREADY_EXISTS
  override readonly name = 'SnapshotExistsError'
}

/** The operation does not fit the snapshot's state: commit of a non-active, remove with children, mounts of a committed. */
export class FailedPreconditionError extends SnapshotterError {
  static readonly code = 'ERR_FAILED_PRECONDITION'
  readonly code = FailedPreconditionError.code
  readonly grpcCode = status.FAILED_PRECONDITION
  override readonly name = 'FailedPreconditionError'
}

/** Bad request: parent not committed, unknown update field. */
export class InvalidArgumentError extends SnapshotterError {
  static readonly code = 'ERR_INVALID_ARGUMENT'
  readonly code = InvalidArgumentError.code
  readonly grpcCode = status.INVALID_ARGUMENT
  override readonly name = 'InvalidArgumentError'
}

/** A snapshot key, parent or commit name the service refuses: empty, too long, control characters, "." or ".." components. */
export class InvalidKeyError extends SnapshotterError {
  static readonly code = 'ERR_INVALID_KEY'
  readonly code = InvalidKeyError.code
  readonly grpcCode = status.INVALID_ARGUMENT
  override readonly name = 'InvalidKeyError'
}

/** A label over containerd's size limit (key + value bytes), or more labels than one call or snapshot may carry. */
export class InvalidLabelError extends SnapshotterError {
  static readonly code = 'ERR_INVALID_LABEL'
  readonly code = InvalidLabelError.code
  readonly grpcCode = status.INVALID_ARGUMENT
  override readonly name = 'InvalidLabelError'
}

/** A `containerd-namespace` that is not a containerd identifier. */
export class InvalidNamespaceError extends SnapshotterError {
  static readonly code = 'ERR_INVALID_NAMESPACE'
  readonly code = InvalidNamespaceError.code
  readonly grpcCode = status.INVALID_ARGUMENT
  override readonly name = 'InvalidNamespaceError'
}

/** A request over one of the service's size limits: too many or too long filters, too many Update paths. */
export class RequestTooLargeError extends SnapshotterError {
  static readonly code = 'ERR_REQUEST_TOO_LARGE'
  readonly code = RequestTooLargeError.code
  readonly grpcCode = status.INVALID_ARGUMENT
  override readonly name = 'RequestTooLargeError'
}

/** A List whose matching ran longer than its time budget (it is given up, not left running). */
export class ListTimeoutError extends SnapshotterError {
  static readonly code = 'ERR_LIST_TIMEOUT'
  readonly code = ListTimeoutError.code
  readonly grpcCode = status.DEADLINE_EXCEEDED
  override readonly name = 'ListTimeoutError'
}

/** A List filter that does not parse, or whose regexps compile to too large a program. */
export class InvalidFilterError extends SnapshotterError {
  static readonly code = 'ERR_INVALID_FILTER'
  readonly code = InvalidFilterError.code
  readonly grpcCode = status.INVALID_ARGUMENT
  override readonly name = 'InvalidFilterError'
}

/** A remote layer backing this snapshot (or an ancestor) is not mounted/healthy. */
export class UnavailableError extends SnapshotterError {
  static readonly code = 'ERR_UNAVAILABLE'
  readonly code = UnavailableError.code
  readonly grpcCode = status.UNAVAILABLE
  override readonly name = 'UnavailableError'
}

/** The snapshotter was used before `start()` or after `stop()`. */
export class NotStartedError extends SnapshotterError {
  static readonly code = 'ERR_NOT_STARTED'
  readonly code = NotStartedError.code
  readonly grpcCode = status.UNAVAILABLE
  override readonly name = 'NotStartedError'
}

/** A remote snapshot could not be mounted again at start (and invalid mounts are not allowed). */
export class RemountError extends SnapshotterError {
  static readonly code = 'ERR_REMOUNT_FAILED'
  readonly code = RemountError.code
  readonly grpcCode = status.INTERNAL
  override readonly name = 'RemountError'
}
