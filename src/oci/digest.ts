import { createHash, type Hash } from 'node:crypto'
import { DigestMismatchError, InvalidDigestError, SizeMismatchError } from './errors.js'
import type { Descriptor } from './types.js'

/** Digest algorithms we can verify, with their hex length. */
const ALGORITHMS: Record<string, number> = { sha256: 64, sha512: 128 }

export interface ParsedDigest {
  algorithm: 'sha256' | 'sha512'
  hex: string
}

/** Parses `sha256:<64 hex>` (or sha512); throws {@link InvalidDigestError}. */
export function parseDigest (digest: string): ParsedDigest {
  const m = /^([a-z0-9]+):([a-f0-9]+)$/.exec(digest)
  if (m == null || ALGORITHMS[m[1]] == null || ALGORITHMS[m[1]] !== m[2].length) {
    throw new InvalidDigestError(`invalid digest ${JSON.stringify(digest)} (want sha256:<64 lowercase hex>)`)
  }
  return { algorithm: m[1] as ParsedDigest['algorithm'], hex: m[2] }
}

export function isDigest (digest: string): boolean {
  try {
    parseDigest(digest)
    return true
  } catch {
    return false
  }
}

/** `sha256:<hex>` of some bytes. */
export function digestOf (data: Uint8Array, algorithm: ParsedDigest['algorithm'] = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(data).digest('hex')}`
}

/** Incremental digest that also counts bytes. */
export class Digester {
  private readonly hash: Hash
  bytes = 0
  constructor (readonly algorithm: ParsedDigest['algorithm'] = 'sha256') {
    this.hash = createHash(algorithm)
  }

  update (data: Uint8Array): this {
    this.hash.update(data)
    this.bytes += data.length
    return this
  }

  digest (): string {
    return `${this.algorithm}:${this.hash.digest('hex')}`
  }
}

/**
 * Passes the bytes of a blob through while hashing them; throws {@link SizeMismatchError} as
 * soon as more bytes than `desc.size` arrive, and at the end {@link SizeMismatchError} or
 * {@link DigestMismatchError}. Consumers must treat what they got as untrusted until the
 * iteration completes without error.
 */
export async function * verifyStream (source: AsyncIterable<Uint8Array>, desc: Pick<Descriptor, 'digest' | 'size'>, where?: string): AsyncGenerator<Uint8Array> {
  const { algorithm } = parseDigest(desc.digest)
  const d = new Digester(algorithm)
  for await (const chunk of source) {
    if (chunk.length === 0) continue
    d.update(chunk)
    if (d.bytes > desc.size) throw new SizeMismatchError(desc.digest, desc.size, desc.size + 1, where)
    yield chunk
  }
  if (d.bytes !== desc.size) throw new SizeMismatchError(desc.digest, desc.size, d.bytes, where)
  const actual = d.digest()
  if (actual !== desc.digest) throw new DigestMismatchError(desc.digest, desc.digest, actual, where)
}

/** Checks bytes held in memory against a descriptor. */
export function verifyBytes (data: Uint8Array, desc: Pick<Descriptor, 'digest' | 'size'>, where?: string): void {
  if (data.length !== desc.size) throw new SizeMismatchError(desc.digest, desc.size, data.length, where)
  const actual = digestOf(data, parseDigest(desc.digest).algorithm)
  if (actual !== desc.digest) throw new DigestMismatchError(desc.digest, desc.digest, actual, where)
}
