/**
 * One error class per failure, each with a stable `code` (same pattern as `src/estargz/errors.ts`).
 * Messages are one line and name the blob, file, repository or reference that failed.
 */
export abstract class OciError extends Error {
  abstract readonly code: string
}

/** A string that is not a valid `algorithm:hex` digest. */
export class InvalidDigestError extends OciError {
  static readonly code = 'ERR_INVALID_DIGEST'
  readonly code = InvalidDigestError.code
  override readonly name = 'InvalidDigestError'
}

/** Bytes read for a blob do not hash to the digest its descriptor promises. */
export class DigestMismatchError extends OciError {
  static readonly code = 'ERR_DIGEST_MISMATCH'
  readonly code = DigestMismatchError.code
  override readonly name = 'DigestMismatchError'
  constructor (readonly blob: string, readonly expected: string, readonly actual: string, where?: string) {
    super(`digest mismatch for blob ${blob}${where != null ? ` in ${where}` : ''}: expected ${expected}, got ${actual}`)
  }
}

/**
 * A layer's uncompressed bytes do not hash to the `rootfs.diff_ids` entry its image config gives
 * for it (the layer's digest may well be right: the config and the layer disagree).
 */
export class DiffIdMismatchError extends OciError {
  static readonly code = 'ERR_DIFFID_MISMATCH'
  readonly code = DiffIdMismatchError.code
  override readonly name = 'DiffIdMismatchError'
  constructor (readonly layer: string, readonly expected: string, readonly actual: string, where?: string) {
    super(`diffID mismatch for layer ${layer}${where != null ? ` in ${where}` : ''}: the config says ${expected}, the uncompressed layer is ${actual}`)
  }
}

/** A blob is longer or shorter than its descriptor's `size`. */
export class SizeMismatchError extends OciError {
  static readonly code = 'ERR_SIZE_MISMATCH'
  readonly code = SizeMismatchError.code
  override readonly name = 'SizeMismatchError'
  constructor (readonly blob: string, readonly expected: number, readonly actual: number, where?: string) {
    super(`size mismatch for blob ${blob}${where != null ? ` in ${where}` : ''}: expected ${expected} bytes, got ${actual === expected + 1 ? `more than ${expected}` : String(actual)}`)
  }
}

/** A media type this project does not know how to handle (in the place it was found). */
export class UnknownMediaTypeError extends OciError {
  static readonly code = 'ERR_UNKNOWN_MEDIA_TYPE'
  readonly code = UnknownMediaTypeError.code
  override readonly name = 'UnknownMediaTypeError'
  constructor (readonly blob: string, readonly mediaType: string, what: string) {
    super(`unknown ${what} media type ${JSON.stringify(mediaType)} for blob ${blob}`)
  }
}

/** An image manifest that is not valid JSON or lacks required fields. */
export class MalformedManifestError extends OciError {
  static readonly code = 'ERR_MALFORMED_MANIFEST'
  readonly code = MalformedManifestError.code
  override readonly name = 'MalformedManifestError'
}

/** An image index / manifest list (or a layout's index.json) that is not valid. */
export class MalformedIndexError extends OciError {
  static readonly code = 'ERR_MALFORMED_INDEX'
  readonly code = MalformedIndexError.code
  override readonly name = 'MalformedIndexError'
}

/** An image configuration that is not valid JSON or lacks required fields. */
export class MalformedConfigError extends OciError {
  static readonly code = 'ERR_MALFORMED_CONFIG'
  readonly code = MalformedConfigError.code
  override readonly name = 'MalformedConfigError'
}

/** An OCI layout or archive that lacks `oci-layout`/`index.json`, or a docker-archive without a valid manifest.json. */
export class MalformedLayoutError extends OciError {
  static readonly code = 'ERR_MALFORMED_LAYOUT'
  readonly code = MalformedLayoutError.code
  override readonly name = 'MalformedLayoutError'
}

/** A blob a descriptor points to is not in the source. */
export class BlobNotFoundError extends OciError {
  static readonly code = 'ERR_BLOB_NOT_FOUND'
  readonly code = BlobNotFoundError.code
  override readonly name = 'BlobNotFoundError'
  constructor (readonly blob: string, where: string) {
    super(`blob ${blob} not found in ${where}`)
  }
}

/** An image reference (`oci:DIR:TAG`, `docker://HOST/REPO:TAG`, ...) that does not parse. */
export class InvalidReferenceError extends OciError {
  static readonly code = 'ERR_INVALID_REFERENCE'
  readonly code = InvalidReferenceError.code
  override readonly name = 'InvalidReferenceError'
}

/** The requested tag is not in the layout/archive, or no tag was given and several images are. */
export class ImageNotFoundError extends OciError {
  static readonly code = 'ERR_IMAGE_NOT_FOUND'
  readonly code = ImageNotFoundError.code
  override readonly name = 'ImageNotFoundError'
}

/** No manifest matches the requested platform. */
export class PlatformNotFoundError extends OciError {
  static readonly code = 'ERR_PLATFORM_NOT_FOUND'
  readonly code = PlatformNotFoundError.code
  override readonly name = 'PlatformNotFoundError'
}

/** A platform string that is not `os/arch[/variant]`. */
export class InvalidPlatformError extends OciError {
  static readonly code = 'ERR_INVALID_PLATFORM'
  readonly code = InvalidPlatformError.code
  override readonly name = 'InvalidPlatformError'
}

/** A blob bigger than the cap for blobs read into memory (manifests, configs). */
export class BlobTooLargeError extends OciError {
  static readonly code = 'ERR_BLOB_TOO_LARGE'
  readonly code = BlobTooLargeError.code
  override readonly name = 'BlobTooLargeError'
}

/** A source or sink used after `close()`. */
export class ClosedError extends OciError {
  static readonly code = 'ERR_CLOSED'
  readonly code = ClosedError.code
  override readonly name = 'ClosedError'
}

/** Base of the registry failures: carries the HTTP status (0 for connection failures). */
export abstract class RegistryError extends OciError {
  constructor (message: string, readonly status: number) {
    super(message)
  }
}

/** 401: no or bad credentials, or the token endpoint refused them. */
export class RegistryUnauthorizedError extends RegistryError {
  static readonly code = 'ERR_REGISTRY_UNAUTHORIZED'
  readonly code = RegistryUnauthorizedError.code
  override readonly name = 'RegistryUnauthorizedError'
}

/** 403: authenticated but not allowed. */
export class RegistryDeniedError extends RegistryError {
  static readonly code = 'ERR_REGISTRY_DENIED'
  readonly code = RegistryDeniedError.code
  override readonly name = 'RegistryDeniedError'
}

/** 404: repository, tag, manifest or blob unknown. */
export class RegistryNotFoundError extends RegistryError {
  static readonly code = 'ERR_REGISTRY_NOT_FOUND'
  readonly code = RegistryNotFoundError.code
  override readonly name = 'RegistryNotFoundError'
}

/** 5xx (after the bounded retries). */
export class RegistryServerError extends RegistryError {
  static readonly code = 'ERR_REGISTRY_SERVER'
  readonly code = RegistryServerError.code
  override readonly name = 'RegistryServerError'
}

/** Connection refused/reset/closed (after the bounded retries). */
export class RegistryConnectionError extends RegistryError {
  static readonly code = 'ERR_REGISTRY_CONNECTION'
  readonly code = RegistryConnectionError.code
  override readonly name = 'RegistryConnectionError'
}

/** Any other unexpected answer (status, missing header, bad token response). */
export class RegistryProtocolError extends RegistryError {
  static readonly code = 'ERR_REGISTRY_PROTOCOL'
  readonly code = RegistryProtocolError.code
  override readonly name = 'RegistryProtocolError'
}
