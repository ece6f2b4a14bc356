import { createHash } from 'node:crypto'
import { bytesReader, readHeader } from '@ipld/car/decoder'
import { CID } from 'multiformats/cid'
import { AbortError } from '../errors.js'
import { BundleBlockMismatchError, BundleFormatError, BundleLimitError, BundleTruncatedError, BundleUnsupportedHashError } from './errors.js'

/** Limits on what a bundle may make us read or hold, in one place. */
export const READER_DEFAULTS = {
  /** The header (its roots) is at most this long. */
  maxHeaderBytes: 1 << 20,
  /** At most this many roots. */
  maxRoots: 1024,
  /** A block is at most this long: what bitswap and our block exchange carry (our leaves are ≤ 1 MiB). */
  maxBlockBytes: 4 << 20,
  /** A CID in a section is at most this long (as the block exchange's limit). */
  maxCidBytes: 128
} as const

export type ReaderLimits = { [K in keyof typeof READER_DEFAULTS]: number }

/** Multihash functions whose blocks we can check, by multihash code. */
const HASHES: Record<number, { name: string, length: number } | undefined> = {
  0x12: { name: 'sha256', length: 32 },
  0x13: { name: 'sha512', length: 64 }
}
const IDENTITY = 0x00

/** Checks a block's bytes against its CID; `offset` names the section in errors. */
export function checkBlock (cid: CID, bytes: Uint8Array, offset: number): void {
  const mh = cid.multihash
  if (mh.code === IDENTITY) {
    if (Buffer.compare(Buffer.from(mh.digest), Buffer.from(bytes)) !== 0) throw new BundleBlockMismatchError(cid.toString(), offset)
    return
  }
  const hash = HASHES[mh.code]
  if (hash == null) throw new BundleUnsupportedHashError(cid.toString(), mh.code)
  // A truncated digest (a shorter multihash length) is not something we accept either.
  if (mh.digest.length !== hash.length) throw new BundleUnsupportedHashError(cid.toString(), mh.code)
  const actual = createHash(hash.name).update(bytes).digest()
  if (Buffer.compare(actual, Buffer.from(mh.digest)) !== 0) throw new BundleBlockMismatchError(cid.toString(), offset)
}

/**
 * Bytes pulled from a stream on demand: a section is read whole (it is bounded) and handed out
 * without copying when it lies in one chunk.
 */
class Input {
  private readonly chunks: Uint8Array[] = []
  private have = 0
  private ended = false
  /** Bytes consumed so far. */
  pos = 0

  constructor (private readonly it: AsyncIterator<Uint8Array>, private readonly signal?: AbortSignal) {}

  /** Makes at least `n` bytes available; false when the input ends first. */
  private async fill (n: number): Promise<boolean> {
    while (this.have < n && !this.ended) {
      if (this.signal?.aborted === true) throw new AbortError()
      const next = await this.it.next()
      if (next.done === true) { this.ended = true; break }
      if (next.value.length === 0) continue
      this.chunks.push(next.value)
      this.have += next.value.length
    }
    return this.have >= n
  }

  async atEnd (): Promise<boolean> {
    return !await this.fill(1)
  }

  async exactly (n: number): Promise<Uint8Array> {
    if (!await this.fill(n)) throw new BundleTruncatedError(this.pos + this.have)
    this.pos += n
    this.have -= n
    const first = this.chunks[0]
    if (first.length >= n) {
      const out = first.subarray(0, n)
      if (first.length === n) this.chunks.shift()
      else this.chunks[0] = first.subarray(n)
      return out
    }
    const out = new Uint8Array(n)
    let at = 0
    while (at < n) {
      const c = this.chunks[0]
      const take = Math.min(c.length, n - at)
      out.set(c.subarray(0, take), at)
      at += take
      if (take === c.length) this.chunks.shift()
      else this.chunks[0] = c.subarray(take)
    }
    return out
  }

  /** An unsigned LEB128 varint, at most 8 bytes (a length far beyond any limit of ours). */
  async varint (what: string): Promise<number> {
    let value = 0
    for (let i = 0; i < 8; i++) {
      const b = (await this.exactly(1))[0]
      value += (b & 0x7f) * 2 ** (7 * i)
      if ((b & 0x80) === 0) return value
    }
    throw new BundleFormatError(`${what} at byte ${this.pos - 8} is not a valid varint`)
  }
}

export interface CarBlock {
  cid: CID
  bytes: Uint8Array
  /** Offset of the block's section in the input. */
  offset: number
}

export interface CarStream {
  roots: CID[]
  /** The blocks in input order, each checked against its CID before it is yielded. */
  blocks: AsyncGenerator<CarBlock>
}

/**
 * Reads a CARv1 stream with bounded memory: the header first (its roots), then one section at a
 * time. Every size read from the input is checked against `limits` before anything is
 * allocated, and every block against its CID before it is handed out. Throws typed errors:
 * BundleFormatError, BundleTruncatedError, BundleLimitError, BundleBlockMismatchError,
 * BundleUnsupportedHashError.
 */
export async function readCar (source: AsyncIterable<Uint8Array>, options: { signal?: AbortSignal, limits?: Partial<ReaderLimits> } = {}): Promise<CarStream> {
  const limits: ReaderLimits = { ...READER_DEFAULTS, ...options.limits }
  const input = new Input(source[Symbol.asyncIterator](), options.signal)
  if (await input.atEnd()) throw new BundleFormatError('the bundle is empty')
  const headerLength = await input.varint('the header length')
  if (headerLength === 0) throw new BundleFormatError('the bundle\'s header is empty')
  if (headerLength > limits.maxHeaderBytes) throw new BundleLimitError(`the bundle's header is ${headerLength} bytes, more than the ${limits.maxHeaderBytes} allowed`)
  const headerBytes = await input.exactly(headerLength)
  let roots: CID[]
  try {
    // @ipld/car's own header decoding and validation, over the bounded bytes we read.
    const prefixed = new Uint8Array(headerBytes.length + 9)
    let n = 0
    let len = headerLength
    do { prefixed[n++] = (len & 0x7f) | (len >= 0x80 ? 0x80 : 0); len = Math.floor(len / 128) } while (len > 0)
    prefixed.set(headerBytes, n)
    const header = await readHeader(bytesReader(prefixed.subarray(0, n + headerBytes.length)))
    if (header.version !== 1) throw new BundleFormatError(`CAR version ${String(header.version)}: only CARv1 bundles are read`)
    roots = header.roots
  } catch (err) {
    if (err instanceof BundleFormatError) throw err
    throw new BundleFormatError(`not a CARv1 bundle: ${(err as Error).message}`, { cause: err })
  }
  if (roots.length > limits.maxRoots) throw new BundleLimitError(`the bundle names ${roots.length} roots, more than the ${limits.maxRoots} allowed`)

  async function * blocks (): AsyncGenerator<CarBlock> {
    while (!await input.atEnd()) {
      const offset = input.pos
      const length = await input.varint('a section length')
      if (length === 0) throw new BundleFormatError(`empty section at byte ${offset}`)
      if (length > limits.maxBlockBytes + limits.maxCidBytes) throw new BundleLimitError(`the section at byte ${offset} is ${length} bytes, more than a block of ${limits.maxBlockBytes} bytes and its CID`)
      const section = await input.exactly(length)
      let cid: CID
      let bytes: Uint8Array
      try {
        [cid, bytes] = CID.decodeFirst(section)
        // A CID decoded in place is a view of the section, and so of the input's chunk: kept in
        // an index, it would keep that whole chunk alive. Its own copy is a few dozen bytes.
        cid = CID.decode(Uint8Array.prototype.slice.call(section, 0, section.length - bytes.length)) // (Buffer's own slice is a view)
      } catch (err) {
        throw new BundleFormatError(`the section at byte ${offset} does not start with a valid CID: ${(err as Error).message}`, { cause: err })
      }
      if (section.length - bytes.length > limits.maxCidBytes) throw new BundleLimitError(`the CID at byte ${offset} is longer than ${limits.maxCidBytes} bytes`)
      if (bytes.length > limits.maxBlockBytes) throw new BundleLimitError(`block ${cid.toString()} is ${bytes.length} bytes, more than the ${limits.maxBlockBytes} allowed`)
      checkBlock(cid, bytes, offset)
      yield { cid, bytes, offset }
    }
  }
  return { roots, blocks: blocks() }
}
