import { IpfsEstargzError } from '../errors.js'

/**
 * Errors of the OCI image layer, one class per failure (the pattern is in src/errors.ts).
 * Messages are one line and name the blob, file, repository or reference that failed.
 */
export abstract class OciError extends IpfsEstargzError {}

/** A string that is not a valid `algorithm:hex` digest. */
export class InvalidDigestError extends OciError { static readonly code = 'ERR_INVALID_DIGEST' }

/** Bytes read for a blob do not hash to the digest its descriptor promises. */
export class DigestMismatchError extends OciError {
  static readonly code = 'ERR_DIGEST_MISMATCH'
  constructor (readonly blob: string, readonly expected: string, readonly actual: string, where?: string, options?: ErrorOptions) {
    super(`digest mismatch for blob ${blob}${where != null ? ` in ${where}` : ''}: expected ${expected}, got ${actual}`, options)
  }
}

/**
 * A layer's uncompressed bytes do not hash to the `rootfs.diff_ids` entry its image config gives
 * for it (the layer's digest may well be right: the config and the layer disagree). Found when
 * converting or pushing (we hash the layer), and when pulling (containerd's differ hashes it as
 * it applies the layer: `where` says so).
 */
export class DiffIdMismatchError extends OciError {
  static readonly code = 'ERR_DIFFID_MISMATCH'
  constructor (readonly layer: string, readonly expected: string, readonly actual: string, where?: string, options?: ErrorOptions) {
    super(`diffID mismatch for layer ${layer}${where != null ? ` in ${where}` : ''}: the config says ${expected}, the uncompressed layer is ${actual}`, options)
  }
}

/** A blob is longer or shorter than its descriptor's `size`. */
export class SizeMismatchError extends OciError {
  static readonly code = 'ERR_SIZE_MISMATCH'
  constructor (readonly blob: string, readonly expected: number, readonly actual: number, where?: string, options?: ErrorOptions) {
    super(`size mismatch for blob ${blob}${where != null ? ` in ${where}` : ''}: expected ${expected} bytes, got ${actual === expected + 1 ? `more than ${expected}` : String(actual)}`, options)
  }
}

/** A media type this project does not know how to handle (in the place it was found). */
export class UnknownMediaTypeError extends OciError {
  static readonly code = 'ERR_UNKNOWN_MEDIA_TYPE'
  constructor (readonly blob: string, readonly mediaType: string, what: string, options?: ErrorOptions) {
    super(`unknown ${what} media type ${JSON.stringify(mediaType)} for blob ${blob}`, options)
  }
}

/** An image manifest that is not valid JSON or lacks required fields. */
export class MalformedManifestError extends OciError { static readonly code = 'ERR_MALFORMED_MANIFEST' }

/** An image index / manifest list (or a layout's index.json) that is not valid. */
export class MalformedIndexError extends OciError { static readonly code = 'ERR_MALFORMED_INDEX' }

/** An image configuration that is not valid JSON or lacks required fields. */
export class MalformedConfigError extends OciError { static readonly code = 'ERR_MALFORMED_CONFIG' }

/** An OCI layout or archive that lacks `oci-layout`/`index.json`, or a docker-archive without a valid manifest.json. */
export class MalformedLayoutError extends OciError { static readonly code = 'ERR_MALFORMED_LAYOUT' }

/** A blob a descriptor points to is not in the image being read. */
export class BlobNotFoundError extends OciError {
  static readonly code = 'ERR_BLOB_NOT_FOUND'
  constructor (readonly blob: string, where: string, options?: ErrorOptions) {
    super(`blob ${blob} not found in ${where}`, options)
  }
}

/** An image reference (`oci:DIR:TAG`, `docker://HOST/REPO:TAG`, ...) that does not parse. */
export class InvalidReferenceError extends OciError { static readonly code = 'ERR_INVALID_REFERENCE' }

/** The requested tag is not in the layout/archive, or no tag was given and several images are. */
export class ImageNotFoundError extends OciError { static readonly code = 'ERR_IMAGE_NOT_FOUND' }

/** No manifest matches the requested platform. */
export class PlatformNotFoundError extends OciError { static readonly code = 'ERR_PLATFORM_NOT_FOUND' }

/** A platform string that is not `os/arch[/variant]`. */
export class InvalidPlatformError extends OciError { static readonly code = 'ERR_INVALID_PLATFORM' }

/** A blob bigger than the cap for blobs read into memory (manifests, configs). */
export class BlobTooLargeError extends OciError { static readonly code = 'ERR_BLOB_TOO_LARGE' }

/** An image reader or sink used after `close()`. */
export class ClosedError extends OciError { static readonly code = 'ERR_CLOSED' }

/** Base of the registry failures: carries the HTTP status (0 for connection failures). */
export abstract class RegistryError extends OciError {
  constructor (message: string, readonly status: number, options?: ErrorOptions) {
    super(message, options)
  }
}

/** 401: no or bad credentials, or the token endpoint refused them. */
export class RegistryUnauthorizedError extends RegistryError { static readonly code = 'ERR_REGISTRY_UNAUTHORIZED' }

/** 403: authenticated but not allowed. */
export class RegistryDeniedError extends RegistryError { static readonly code = 'ERR_REGISTRY_DENIED' }

/** 404: repository, tag, manifest or blob unknown. */
export class RegistryNotFoundError extends RegistryError { static readonly code = 'ERR_REGISTRY_NOT_FOUND' }

/** 5xx (after the bounded retries). */
export class RegistryServerError extends RegistryError { static readonly code = 'ERR_REGISTRY_SERVER' }

/** Connection refused/reset/closed (after the bounded retries). */
export class RegistryConnectionError extends RegistryError { static readonly code = 'ERR_REGISTRY_CONNECTION' }

/** Any other unexpected answer (status, missing header, bad token response). */
export class RegistryProtocolError extends RegistryError { static readonly code = 'ERR_REGISTRY_PROTOCOL' }
