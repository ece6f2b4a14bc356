import { IpfsEstargzError } from '../errors.js'

/**
 * Errors of the converter (the pattern is in src/errors.ts): its only error of its own, so on the
 * shared base; a layer that fails its checks fails with estargz's or oci's errors.
 */

/** Converting an image failed in a way that names the blob. */
export class ConversionError extends IpfsEstargzError { static readonly code = 'ERR_CONVERSION' }
