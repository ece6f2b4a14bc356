import { IpfsEstargzError } from '../errors.js'

/**
 * Errors of image bundles (CAR files carried across an air gap), one class per failure (the
 * pattern is in src/errors.ts). Every refusal of an import leaves the repo as it was.
 */
export abstract class BundleError extends IpfsEstargzError {}

/** The input is not a CARv1 file: a bad header, another version, a malformed section or CID. */
export class BundleFormatError extends BundleError { static readonly code = 'ERR_BUNDLE_FORMAT' }

/** The input ended inside its header or inside a block's section. */
export class BundleTruncatedError extends BundleError {
  static readonly code = 'ERR_BUNDLE_TRUNCATED'
  constructor (readonly offset: number, options?: ErrorOptions) {
    super(`the bundle ends in the middle of a section (at byte ${offset}): it is truncated`, options)
  }
}

/** A size read from the bundle is over our limit (header, roots, a block, a CID). */
export class BundleLimitError extends BundleError { static readonly code = 'ERR_BUNDLE_LIMIT' }

/** A block's bytes do not hash to its CID: the bundle was altered or damaged. */
export class BundleBlockMismatchError extends BundleError {
  static readonly code = 'ERR_BUNDLE_BLOCK_MISMATCH'
  constructor (readonly cid: string, readonly offset: number, options?: ErrorOptions) {
    super(`block ${cid} (section at byte ${offset}): its bytes do not match its CID; the bundle was altered or damaged`, options)
  }
}

/** A block's CID names a hash function we cannot check: it is refused, not trusted. */
export class BundleUnsupportedHashError extends BundleError {
  static readonly code = 'ERR_BUNDLE_UNSUPPORTED_HASH'
  constructor (readonly cid: string, readonly hashCode: number, options?: ErrorOptions) {
    super(`block ${cid}: hash function 0x${hashCode.toString(16)} cannot be checked (sha2-256, sha2-512 and identity can)`, options)
  }
}

/** A block an image needs (reachable from a root, or named by a manifest) is not in the bundle. */
export class BundleIncompleteError extends BundleError {
  static readonly code = 'ERR_BUNDLE_INCOMPLETE'
  constructor (readonly root: string, readonly missing: string, options?: ErrorOptions) {
    super(`the bundle is incomplete: block ${missing} of image ${root} is not in it`, options)
  }
}

/** A root of the bundle is not an image we can list (an OCI layout directory, or its descriptor JSON beside it). */
export class BundleNotAnImageError extends BundleError { static readonly code = 'ERR_BUNDLE_NOT_AN_IMAGE' }

/** A blob's bytes do not match the digest (or size) the image names it by. */
export class BundleBlobDigestError extends BundleError { static readonly code = 'ERR_BUNDLE_BLOB_DIGEST' }

/** Export: a name or CID that is no image of this repo (and not a layout directory). */
export class UnknownImageError extends BundleError {
  static readonly code = 'ERR_UNKNOWN_IMAGE'
  constructor (readonly ref: string, options?: ErrorOptions) {
    super(`no image ${JSON.stringify(ref)} in the repo (give a root CID or a name that \`image ls\` lists)`, options)
  }
}

/** Export: a block of the image is not in the repo (and fetching was not asked for, or failed). */
export class ExportIncompleteError extends BundleError {
  static readonly code = 'ERR_EXPORT_INCOMPLETE'
  constructor (readonly root: string, readonly missing: string, options?: ErrorOptions) {
    super(`cannot export image ${root}: block ${missing} is not in the repo (pass --fetch to fetch missing blocks from the node's peers and gateways)`, options)
  }
}
