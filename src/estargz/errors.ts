import { IpfsEstargzError } from '../errors.js'

/**
 * Errors of the eStargz reader and writer, one class per failure (the pattern is in
 * src/errors.ts, the only module of ours this folder depends on). Messages are one line and name
 * the thing that failed.
 */
export abstract class EstargzError extends IpfsEstargzError {}

// Thrown here too; exported so that this module's users find them beside its own errors.
export { AbortError, InvalidOptionError } from '../errors.js'

/** The last bytes of the blob are not an eStargz (51-byte) or legacy stargz (47-byte) footer. */
export class BadFooterError extends EstargzError { static readonly code = 'ERR_BAD_FOOTER' }

/** The TOC (compressed or decompressed) is larger than the configured cap. */
export class TocTooLargeError extends EstargzError { static readonly code = 'ERR_TOC_TOO_LARGE' }

/** The TOC JSON is not what the format requires (bad JSON, bad version, bad field types). */
export class MalformedTocError extends EstargzError { static readonly code = 'ERR_MALFORMED_TOC' }

/** sha256 of the TOC JSON differs from the digest the caller trusts (the layer annotation). */
export class TocDigestMismatchError extends EstargzError {
  static readonly code = 'ERR_TOC_DIGEST_MISMATCH'
  constructor (readonly expected: string, readonly actual: string, options?: ErrorOptions) {
    super(`TOC digest mismatch: expected ${expected}, got ${actual}`, options)
  }
}

/** A chunk's uncompressed bytes do not hash to its `chunkDigest`; the bytes are never returned. */
export class ChunkDigestMismatchError extends EstargzError {
  static readonly code = 'ERR_CHUNK_DIGEST_MISMATCH'
  constructor (readonly path: string, readonly chunkOffset: number, readonly expected: string, readonly actual: string, options?: ErrorOptions) {
    super(`chunk digest mismatch in ${JSON.stringify(path)} at file offset ${chunkOffset}: expected ${expected}, got ${actual}`, options)
  }
}

/** The blob (or a range of it) ends before the bytes the footer or TOC promise. */
export class TruncatedBlobError extends EstargzError { static readonly code = 'ERR_TRUNCATED_BLOB' }

/** A gzip member is not valid gzip/deflate data. */
export class MalformedGzipError extends EstargzError { static readonly code = 'ERR_MALFORMED_GZIP' }

/** The input is not a tar archive, or a tar header is corrupt. */
export class MalformedTarError extends EstargzError { static readonly code = 'ERR_MALFORMED_TAR' }

/** A tar entry type eStargz cannot represent (GNU sparse files, volume headers, ...). */
export class UnsupportedTarEntryError extends EstargzError { static readonly code = 'ERR_UNSUPPORTED_TAR_ENTRY' }

/** A path that is absolute or climbs out of the layer root with `..`. */
export class UnsafePathError extends EstargzError {
  static readonly code = 'ERR_UNSAFE_PATH'
  constructor (readonly path: string, reason = 'escapes the layer root', options?: ErrorOptions) {
    super(`unsafe path ${JSON.stringify(path)}: ${reason}`, options)
  }
}

/** No TOC entry has that name. */
export class EntryNotFoundError extends EstargzError {
  static readonly code = 'ERR_ENTRY_NOT_FOUND'
  constructor (readonly path: string, options?: ErrorOptions) {
    super(`no such file in layer: ${JSON.stringify(path)}`, options)
  }
}

/** The entry exists but has no file content to read (a directory, device, fifo, ...). */
export class NotARegularFileError extends EstargzError {
  static readonly code = 'ERR_NOT_A_REGULAR_FILE'
  constructor (readonly path: string, readonly type: string, options?: ErrorOptions) {
    super(`${JSON.stringify(path)} is a ${type}, not a regular file`, options)
  }
}

/** Following symlinks or hardlinks went round in a circle (or too deep). */
export class LinkLoopError extends EstargzError {
  static readonly code = 'ERR_LINK_LOOP'
  constructor (readonly path: string, options?: ErrorOptions) {
    super(`too many levels of links resolving ${JSON.stringify(path)}`, options)
  }
}

/** A prioritized file given to the writer is not in the input tar. */
export class PrioritizedFileNotFoundError extends EstargzError {
  static readonly code = 'ERR_PRIORITIZED_FILE_NOT_FOUND'
  constructor (readonly path: string, options?: ErrorOptions) {
    super(`prioritized file ${JSON.stringify(path)} is not in the layer`, options)
  }
}
