/**
 * One error class per failure, each with a stable `code` that callers (the CLI, the FUSE layer,
 * the snapshotter) switch on. Messages are one line and name the thing that failed.
 */
export abstract class EstargzError extends Error {
  abstract readonly code: string
}

/** The last bytes of the blob are not an eStargz (51-byte) or legacy stargz (47-byte) footer. */
export class BadFooterError extends EstargzError {
  static readonly code = 'ERR_BAD_FOOTER'
  readonly code = BadFooterError.code
  override readonly name = 'BadFooterError'
}

/** The TOC (compressed or decompressed) is larger than the configured cap. */
export class TocTooLargeError extends EstargzError {
  static readonly code = 'ERR_TOC_TOO_LARGE'
  readonly code = TocTooLargeError.code
  override readonly name = 'TocTooLargeError'
}

/** The TOC JSON is not what the format requires (bad JSON, bad version, bad field types). */
export class MalformedTocError extends EstargzError {
  static readonly code = 'ERR_MALFORMED_TOC'
  readonly code = MalformedTocError.code
  override readonly name = 'MalformedTocError'
}

/** sha256 of the TOC JSON differs from the digest the caller trusts (the layer annotation). */
export class TocDigestMismatchError extends EstargzError {
  static readonly code = 'ERR_TOC_DIGEST_MISMATCH'
  readonly code = TocDigestMismatchError.code
  override readonly name = 'TocDigestMismatchError'
  constructor (readonly expected: string, readonly actual: string) {
    super(`TOC digest mismatch: expected ${expected}, got ${actual}`)
  }
}

/** A chunk's uncompressed bytes do not hash to its `chunkDigest`; the bytes are never returned. */
export class ChunkDigestMismatchError extends EstargzError {
  static readonly code = 'ERR_CHUNK_DIGEST_MISMATCH'
  readonly code = ChunkDigestMismatchError.code
  override readonly name = 'ChunkDigestMismatchError'
  constructor (readonly path: string, readonly chunkOffset: number, readonly expected: string, readonly actual: string) {
    super(`chunk digest mismatch in ${JSON.stringify(path)} at file offset ${chunkOffset}: expected ${expected}, got ${actual}`)
  }
}

/** The blob (or a range of it) ends before the bytes the footer or TOC promise. */
export class TruncatedBlobError extends EstargzError {
  static readonly code = 'ERR_TRUNCATED_BLOB'
  readonly code = TruncatedBlobError.code
  override readonly name = 'TruncatedBlobError'
}

/** A gzip member is not valid gzip/deflate data. */
export class MalformedGzipError extends EstargzError {
  static readonly code = 'ERR_MALFORMED_GZIP'
  readonly code = MalformedGzipError.code
  override readonly name = 'MalformedGzipError'
}

/** The input is not a tar archive, or a tar header is corrupt. */
export class MalformedTarError extends EstargzError {
  static readonly code = 'ERR_MALFORMED_TAR'
  readonly code = MalformedTarError.code
  override readonly name = 'MalformedTarError'
}

/** A tar entry type eStargz cannot represent (GNU sparse files, volume headers, ...). */
export class UnsupportedTarEntryError extends EstargzError {
  static readonly code = 'ERR_UNSUPPORTED_TAR_ENTRY'
  readonly code = UnsupportedTarEntryError.code
  override readonly name = 'UnsupportedTarEntryError'
}

/** A path that is absolute or climbs out of the layer root with `..`. */
export class UnsafePathError extends EstargzError {
  static readonly code = 'ERR_UNSAFE_PATH'
  readonly code = UnsafePathError.code
  override readonly name = 'UnsafePathError'
  constructor (readonly path: string, reason = 'escapes the layer root') {
    super(`unsafe path ${JSON.stringify(path)}: ${reason}`)
  }
}

/** No TOC entry has that name. */
export class EntryNotFoundError extends EstargzError {
  static readonly code = 'ERR_ENTRY_NOT_FOUND'
  readonly code = EntryNotFoundError.code
  override readonly name = 'EntryNotFoundError'
  constructor (readonly path: string) {
    super(`no such file in layer: ${JSON.stringify(path)}`)
  }
}

/** The entry exists but has no file content to read (a directory, device, fifo, ...). */
export class NotARegularFileError extends EstargzError {
  static readonly code = 'ERR_NOT_A_REGULAR_FILE'
  readonly code = NotARegularFileError.code
  override readonly name = 'NotARegularFileError'
  constructor (readonly path: string, readonly type: string) {
    super(`${JSON.stringify(path)} is a ${type}, not a regular file`)
  }
}

/** Following symlinks or hardlinks went round in a circle (or too deep). */
export class LinkLoopError extends EstargzError {
  static readonly code = 'ERR_LINK_LOOP'
  readonly code = LinkLoopError.code
  override readonly name = 'LinkLoopError'
  constructor (readonly path: string) {
    super(`too many levels of links resolving ${JSON.stringify(path)}`)
  }
}

/** A prioritized file given to the writer is not in the input tar. */
export class PrioritizedFileNotFoundError extends EstargzError {
  static readonly code = 'ERR_PRIORITIZED_FILE_NOT_FOUND'
  readonly code = PrioritizedFileNotFoundError.code
  override readonly name = 'PrioritizedFileNotFoundError'
  constructor (readonly path: string) {
    super(`prioritized file ${JSON.stringify(path)} is not in the layer`)
  }
}

/** A caller passed an option or argument outside its valid range. */
export class InvalidOptionError extends EstargzError {
  static readonly code = 'ERR_INVALID_OPTION'
  readonly code = InvalidOptionError.code
  override readonly name = 'InvalidOptionError'
}

/** The operation was aborted through its AbortSignal. */
export class AbortError extends EstargzError {
  static readonly code = 'ABORT_ERR'
  readonly code = AbortError.code
  override readonly name = 'AbortError'
  constructor (message = 'the operation was aborted') {
    super(message)
  }
}
