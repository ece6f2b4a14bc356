import { createHash, type Hash } from 'node:crypto'

/** `sha256:<hex>` of some bytes. */
export function sha256Digest (data: Uint8Array): string {
  return 'sha256:' + createHash('sha256').update(data).digest('hex')
}

/** Incremental sha256 that prints as an OCI digest. */
export class Sha256 {
  private readonly hash: Hash = createHash('sha256')
  update (data: Uint8Array): this {
    this.hash.update(data)
    return this
  }

  digest (): string {
    return 'sha256:' + this.hash.digest('hex')
  }
}

/** digest of the empty string, which every empty regular file carries. */
export const EMPTY_DIGEST = 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
