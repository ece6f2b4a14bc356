import { constants } from 'node:os'
import { IpfsEstargzError } from '../errors.js'

const E = constants.errno

/**
 * Errors of the layer filesystem, one class per failure (the pattern is in src/errors.ts). Each
 * also has the `errno` the FUSE adapter answers with, so the mapping lives next to the failure,
 * not in a switch in the adapter.
 */
export abstract class FsError extends IpfsEstargzError {
  abstract readonly errno: number
}

/** No entry of that name in the layer view. */
export class NoEntryError extends FsError {
  static readonly code = 'ERR_FS_NO_ENTRY'
  readonly errno = E.ENOENT
  constructor (readonly path: string, options?: ErrorOptions) {
    super(`no such file or directory: ${JSON.stringify(path)}`, options)
  }
}

/** A directory operation on something that is not a directory (or a path through a file). */
export class NotADirectoryError extends FsError {
  static readonly code = 'ERR_FS_NOT_A_DIRECTORY'
  readonly errno = E.ENOTDIR
  constructor (readonly path: string, options?: ErrorOptions) {
    super(`not a directory: ${JSON.stringify(path)}`, options)
  }
}

/** A file operation (read) on a directory. */
export class IsADirectoryError extends FsError {
  static readonly code = 'ERR_FS_IS_A_DIRECTORY'
  readonly errno = E.EISDIR
  constructor (readonly path: string, options?: ErrorOptions) {
    super(`is a directory: ${JSON.stringify(path)}`, options)
  }
}

/** readlink on something that is not a symlink, read on a device, ... */
export class InvalidOperationError extends FsError {
  static readonly code = 'ERR_FS_INVALID'
  readonly errno = E.EINVAL
}

/** Anything that would modify the layer. */
export class ReadOnlyError extends FsError {
  static readonly code = 'ERR_FS_READ_ONLY'
  readonly errno = E.EROFS
  constructor (readonly operation: string, readonly path = '', options?: ErrorOptions) {
    super(`read-only file system: ${operation}${path === '' ? '' : ` ${JSON.stringify(path)}`}`, options)
  }
}

/** getxattr of a name the entry does not have. */
export class NoXattrError extends FsError {
  static readonly code = 'ERR_FS_NO_XATTR'
  readonly errno = E.ENODATA
  constructor (readonly path: string, readonly attr: string, options?: ErrorOptions) {
    super(`no xattr ${JSON.stringify(attr)} on ${JSON.stringify(path)}`, options)
  }
}

/** The caller's buffer is too small for an xattr value or list. */
export class XattrRangeError extends FsError {
  static readonly code = 'ERR_FS_XATTR_RANGE'
  readonly errno = E.ERANGE
}

/**
 * Bytes from the source failed verification (chunk digest mismatch, broken gzip). They are
 * never served; the read fails with EIO.
 */
export class ChunkVerificationError extends FsError {
  static readonly code = 'ERR_FS_CHUNK_VERIFICATION'
  readonly errno = E.EIO
  constructor (readonly path: string, readonly chunkOffset: number, readonly reason: string, options?: ErrorOptions) {
    super(`chunk of ${JSON.stringify(path)} at file offset ${chunkOffset} failed verification: ${reason}`, options)
  }
}

/** The source did not answer within `fetchTimeoutMs`. */
export class FetchTimeoutError extends FsError {
  static readonly code = 'ERR_FS_FETCH_TIMEOUT'
  readonly errno = E.ETIMEDOUT
  constructor (readonly offset: number, readonly length: number, readonly timeoutMs: number, options?: ErrorOptions) {
    super(`fetching bytes ${offset}+${length} of the layer timed out after ${timeoutMs} ms`, options)
  }
}

/** The source failed (or returned fewer bytes than the TOC promises). */
export class SourceReadError extends FsError {
  static readonly code = 'ERR_FS_SOURCE_READ'
  readonly errno = E.EIO
}

/** A layer mounted without a trusted TOC digest and without `allowNoVerification`. */
export class VerificationRequiredError extends FsError {
  static readonly code = 'ERR_FS_TOC_DIGEST_REQUIRED'
  readonly errno = E.EINVAL
  constructor (options?: ErrorOptions) {
    super('the digest of the TOC JSON must be passed (or allowNoVerification set) to mount a layer', options)
  }
}

/** The filesystem was stopped; late operations (lazily unmounted, still-open files) fail. */
export class FsClosedError extends FsError {
  static readonly code = 'ERR_FS_CLOSED'
  readonly errno = E.EIO
  constructor (options?: ErrorOptions) {
    super('the layer filesystem is stopped', options)
  }
}

/** Mounting through FUSE failed. */
export class MountError extends FsError {
  static readonly code = 'ERR_FS_MOUNT'
  readonly errno = E.EIO
  constructor (readonly mountpoint: string, reason: string, options?: ErrorOptions) {
    super(`cannot mount ${JSON.stringify(mountpoint)}: ${reason}`, options)
  }
}

/** Unmounting failed (even lazily). */
export class UnmountError extends FsError {
  static readonly code = 'ERR_FS_UNMOUNT'
  readonly errno = E.EIO
  constructor (readonly mountpoint: string, reason: string, options?: ErrorOptions) {
    super(`cannot unmount ${JSON.stringify(mountpoint)}: ${reason}`, options)
  }
}

/** Positive errno for any error: ours carry one, anything unexpected is EIO. */
export function errnoOf (err: unknown): number {
  if (err instanceof FsError) return err.errno
  return E.EIO
}
