import { IpfsEstargzError } from '../errors.js'

/**
 * Errors of the range sources (the pattern is in src/errors.ts). A source's abort is the shared
 * AbortError; what a source reads from (IPFS, a registry) fails with that module's errors.
 */

/** A path given as a file source is not a regular file (a directory, a device, ...). */
export class NotAFileError extends IpfsEstargzError {
  static readonly code = 'ERR_NOT_A_FILE'
  constructor (readonly path: string, options?: ErrorOptions) {
    super(`${path} is not a regular file`, options)
  }
}
