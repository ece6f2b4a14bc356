import { IpfsEstargzError } from '../errors.js'

/** Errors of the images in IPFS (the pattern is in src/errors.ts). */

/** A reference that is not `ipfs://CID`, `/ipfs/CID` or a bare CID. */
export class InvalidIpfsReferenceError extends IpfsEstargzError {
  static readonly code = 'ERR_BAD_IPFS_REF'
  constructor (readonly ref: string, options?: ErrorOptions) {
    super(`not an IPFS reference: ${JSON.stringify(ref)} (want ipfs://CID, /ipfs/CID or a CID)`, options)
  }
}
