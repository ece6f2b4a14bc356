import { constants } from 'node:os'

const E = constants.errno

/**
 * Errors of the layer filesystem. Each has a stable `code` (for logs and callers) and the
 * `errno` the FUSE adapter answers with, so the mapping lives next to the failure, not in a
 * switch in the adapter.
 */
export abstract class FsError extends Error {
  abstract readonly code: string
  abstract readonly errno: number
}

/** No entry of that name in the layer view. */
export class NoEntryError extends FsError {
  static readonly code = 'ERR_FS_NO_ENTRY'
  readonly code = NoEntryError.code
  readonly errno = E.ENOENT
  override readonly name = 'NoEntryError'
  constructor (readonly path: string) {
    super(`no such file or directory: ${JSON.stringify(path)}`)
  }
}

/** A directory operation on something that is not a directory (or a path through a file). */
export class NotADirectoryError extends FsError {
  static readonly code = 'ERR_FS_NOT_A_DIRECTORY'
  readonly code = NotADirectoryError.code
  readonly errno = E.ENOTDIR
  override readonly name = 'NotADirectoryError'
  constructor (readonly path: string) {
    super(`not a directory: ${JSON.stringify(path)}`)
  }
}

/** A file operation (read) on a directory. */
export class IsADirectoryError extends FsError {
  static readonly code = 'ERR_FS_IS_A_DIRECTORY'
  readonly code = IsADirectoryError.code
  readonly errno = E.EISDIR
  override readonly name = 'IsADirectoryError'
  constructor (readonly path: string) {
    super(`is a directory: ${JSON.stringify(path)}`)
  }
}

/** readlink on something that is not a symlink, read on a device, ... */
export class InvalidOperationError extends FsError {
  static readonly code = 'ERR_FS_INVALID'
  readonly code = InvalidOperationError.code
  readonly errno = E.EINVAL
  override readonly name = 'InvalidOperationError'
}

/** Anything that would modify the layer. */
export class ReadOnlyError extends FsError {
  static readonly code = 'ERR_FS_READ_ONLY'
  readonly code = ReadOnlyError.code
  readonly errno = E.EROFS
  override readonly name = 'ReadOnlyError'
  constructor (readonly operation: string, readonly path = '') {
    super(`read-only file system: ${operation}${path === '' ? '' : ` ${JSON.stringify(path)}`}`)
  }
}

/** getxattr of a name the entry does not have. */
export class NoXattrError extends FsError {
  static readonly code = 'ERR_FS_NO_XATTR'
  readonly code = NoXattrError.code
  readonly errno = E.ENODATA
  override readonly name = 'NoXattrError'
  constructor (readonly path: string, readonly attr: string) {
    super(`no xattr ${JSON.stringify(attr)} on ${JSON.stringify(path)}`)
  }
}

/** The caller's buffer is too small for an xattr value or list. */
export class XattrRangeError extends FsError {
  static readonly code = 'ERR_FS_XATTR_RANGE'
  readonly code = XattrRangeError.code
  readonly errno = E.ERANGE
  override readonly name = 'XattrRangeError'
}

/**
 * Bytes from the source failed verification (chunk digest mismatch, broken gzip). They are
 * never served; the read fails with EIO.
 */
export class ChunkVerificationError extends FsError {
  static readonly code = 'ERR_FS_CHUNK_VERIFICATION'
  readonly code = ChunkVerificationError.code
  readonly errno = E.EIO
  override readonly name = 'ChunkVerificationError'
  constructor (readonly path: string, readonly chunkOffset: number, readonly reason: string) {
    super(`chunk of ${JSON.stringify(path)} at file offset ${chunkOffset} failed verification: ${reason}`)
  }
}

/** The source did not answer within `fetchTimeoutMs`. */
export class FetchTimeoutError extends FsError {
  static readonly code = 'ERR_FS_FETCH_TIMEOUT'
  readonly code = FetchTimeoutError.code
  readonly errno = E.ETIMEDOUT
  override readonly name = 'FetchTimeoutError'
  constructor (readonly offset: number, readonly length: number, readonly timeoutMs: number) {
    super(`fetching bytes ${offset}+${length} of the layer timed out after ${timeoutMs} ms`)
  }
}

/** The source failed (or returned fewer bytes than the TOC promises). */
export class SourceReadError extends FsError {
  static readonly code = 'ERR_FS_SOURCE_READ'
  readonly code = SourceReadError.code
  readonly errno = E.EIO
  override readonly name = 'SourceReadError'
}

/** A layer mounted without a trusted TOC digest and without `allowNoVerification`. */
export class VerificationRequiredError extends FsError {
  static readonly code = 'ERR_FS_TOC_DIGEST_REQUIRED'
  readonly code = VerificationRequiredError.code
  readonly errno = E.EINVAL
  override readonly name = 'VerificationRequiredError'
  constructor () {
    super('the digest of the TOC JSON must be passed (or allowNoVerification set) to mount a layer')
  }
}

/** The filesystem was stopped; late operations (lazily unmounted, still-open files) fail. */
export class FsClosedError extends FsError {
  static readonly code = 'ERR_FS_CLOSED'
  readonly code = FsClosedError.code
  readonly errno = E.EIO
  override readonly name = 'FsClosedError'
  constructor () {
    super('the layer filesystem is stopped')
  }
}

/** Mounting through FUSE failed. */
export class MountError extends FsError {
  static readonly code = 'ERR_FS_MOUNT'
  readonly code = MountError.code
  readonly errno = E.EIO
  override readonly name = 'MountError'
  constructor (readonly mountpoint: string, reason: string) {
    super(`cannot mount ${JSON.stringify(mountpoint)}: ${reason}`)
  }
}

/** Unmounting failed (even lazily). */
export class UnmountError extends FsError {
  static readonly code = 'ERR_FS_UNMOUNT'
  readonly code = UnmountError.code
  readonly errno = E.EIO
  override readonly name = 'UnmountError'
  constructor (readonly mountpoint: string, reason: string) {
    super(`cannot unmount ${JSON.stringify(mountpoint)}: ${reason}`)
  }
}

/** Positive errno for any error: ours carry one, anything unexpected is EIO. */
export function errnoOf (err: unknown): number {
  if (err instanceof FsError) return err.errno
  return E.EIO
}
