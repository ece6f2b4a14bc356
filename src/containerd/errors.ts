import { status } from '@grpc/grpc-js'
import { IpfsEstargzError } from '../errors.js'

/**
 * Errors of the containerd client, one class per failure (the pattern is in src/errors.ts).
 * Errors from containerd's API are mapped from the gRPC status containerd's errdefs produce
 * (NotFound, AlreadyExists, ...), so a caller can branch on the class instead of parsing
 * messages. Messages name the call and the object involved. A layer whose applied diff is not
 * the config's diffID fails with oci's DiffIdMismatchError, as it does when we hash the layer.
 */
export abstract class ContainerdError extends IpfsEstargzError {}

/** A failed call to containerd; `grpcCode` is the status containerd answered with. */
export abstract class ContainerdCallError extends ContainerdError {
  constructor (message: string, readonly grpcCode: status, readonly method: string, options?: ErrorOptions) {
    super(message, options)
  }
}

/** The object (image, blob, snapshot, lease, ingest ref) does not exist. */
export class NotFoundError extends ContainerdCallError { static readonly code = 'ERR_CONTAINERD_NOT_FOUND' }

/** The object already exists (for Prepare with a target ref: a remote snapshot was committed). */
export class AlreadyExistsError extends ContainerdCallError { static readonly code = 'ERR_CONTAINERD_ALREADY_EXISTS' }

/** containerd refused the request's arguments (bad digest, bad label, wrong size or digest at commit). */
export class InvalidArgumentError extends ContainerdCallError { static readonly code = 'ERR_CONTAINERD_INVALID_ARGUMENT' }

/** The object is not in a state that allows the call (commit of a committed snapshot, ...). */
export class FailedPreconditionError extends ContainerdCallError { static readonly code = 'ERR_CONTAINERD_FAILED_PRECONDITION' }

/** containerd (or the proxy snapshotter behind it) cannot be reached or is not ready. */
export class UnavailableError extends ContainerdCallError { static readonly code = 'ERR_CONTAINERD_UNAVAILABLE' }

/** The service or method does not exist in this containerd (plugin disabled, too old). */
export class UnimplementedError extends ContainerdCallError { static readonly code = 'ERR_CONTAINERD_UNIMPLEMENTED' }

/** The call was cancelled by our signal or timed out. */
export class CancelledError extends ContainerdCallError { static readonly code = 'ERR_CONTAINERD_CANCELLED' }

/** Any other status containerd answered with (Unknown, Internal, DataLoss, OutOfRange, ...). */
export class ContainerdInternalError extends ContainerdCallError { static readonly code = 'ERR_CONTAINERD_CALL_FAILED' }

/** containerd's content store says a write is at another offset than the bytes we sent add up to. */
export class ContentOffsetMismatchError extends ContainerdError { static readonly code = 'ERR_CONTAINERD_CONTENT_OFFSET' }

/** The image's documents do not allow an unpack (layer/diff_ids count, media type, ...). */
export class BadImageError extends ContainerdError { static readonly code = 'ERR_CONTAINERD_BAD_IMAGE' }

/** A pull that must be lazy (`requireLazy`) met a layer the snapshotter did not mount lazily. */
export class NotLazyError extends ContainerdError {
  static readonly code = 'ERR_LAYER_NOT_LAZY'
  constructor (readonly layer: string, readonly index: number, readonly reason: string, options?: ErrorOptions) {
    super(`layer ${index + 1} (${layer}) was not mounted lazily: ${reason}`, options)
  }
}

/** A containerd config we were asked to merge into cannot take our settings (not TOML, another version). */
export class ContainerdConfigError extends ContainerdError { static readonly code = 'ERR_CONTAINERD_CONFIG' }

interface GrpcLikeError { code?: unknown, details?: unknown, message?: unknown }

/**
 * Maps a gRPC error to the class for its status. `what` names the call's object, e.g.
 * `content.Info sha256:…`; the message is `<what>: <containerd's details>`.
 */
export function fromGrpcError (err: unknown, method: string, what: string, address?: string): Error {
  if (err instanceof ContainerdError) return err
  const e = (err ?? {}) as GrpcLikeError
  // @grpc/grpc-js's errors carry the numeric status as `code`: not ours, so known by it
  if (typeof e.code !== 'number') return err instanceof Error ? err : new Error(String(err))
  const code = e.code as status
  const details = typeof e.details === 'string' && e.details !== '' ? e.details : String(e.message ?? 'no details')
  const msg = `${what}: ${details}`
  switch (code) {
    case status.NOT_FOUND: return new NotFoundError(msg, code, method)
    case status.ALREADY_EXISTS: return new AlreadyExistsError(msg, code, method)
    case status.INVALID_ARGUMENT: return new InvalidArgumentError(msg, code, method)
    case status.FAILED_PRECONDITION: return new FailedPreconditionError(msg, code, method)
    case status.UNAVAILABLE:
      // containerd itself, or a snapshotter it calls for this request (a proxy plugin it cannot
      // reach, a remote layer that cannot be mounted): the details say which
      return new UnavailableError(address != null ? `${what}: unavailable (${details}); asked containerd at ${address}` : msg, code, method)
    case status.UNIMPLEMENTED: return new UnimplementedError(msg, code, method)
    case status.CANCELLED:
    case status.DEADLINE_EXCEEDED: return new CancelledError(msg, code, method)
    default: return new ContainerdInternalError(`${msg} (gRPC status ${status[code] ?? code})`, code, method)
  }
}

export function isNotFound (err: unknown): boolean {
  return err instanceof NotFoundError
}

export function isAlreadyExists (err: unknown): boolean {
  return err instanceof AlreadyExistsError
}
