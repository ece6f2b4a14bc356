import { EstargzError, decompressInput, type InputCompression } from '../estargz/index.js'
import { DiffIdMismatchError, Digester, parseDigest, type Descriptor, type ImageReader } from '../oci/index.js'

export interface SourceLayerOptions {
  /** The layer's `rootfs.diff_ids` entry: `finish` fails unless the uncompressed bytes hash to it. */
  diffID?: string
  /** Sees every compressed byte, in order, as it is read (progress, spooling to a file). */
  onCompressed?: (chunk: Uint8Array) => void | Promise<void>
  signal?: AbortSignal
}

export interface VerifiedLayer {
  compression: InputCompression
  /** Digest of the whole uncompressed stream (equal to the expected diffID, when one was given). */
  diffID: string
  uncompressedSize: number
}

/**
 * A source layer read once, verified to its last byte whoever reads it. The consumer gets the
 * uncompressed tar and may stop where it likes (a tar parser stops at the end-of-archive marker);
 * `finish` then reads what is left of both the uncompressed and the compressed stream, so the
 * source's digest and size checks (which run only at the end of its stream) and the diffID check
 * always run. Nothing derived from the layer may be named before `finish` resolves.
 */
export interface SourceLayer {
  compression: InputCompression
  /** The uncompressed tar. Ending the iteration early does not end the source. */
  tar: AsyncIterable<Uint8Array>
  /** Reads the rest and checks digest, size and diffID: `DigestMismatchError`, `SizeMismatchError`, `DiffIdMismatchError`. */
  finish: () => Promise<VerifiedLayer>
  /**
   * After the consumer failed: the error to report. When the failure came from the layer's
   * bytes (bad tar, bad gzip, a TOC the reader refuses), the rest of the compressed blob is read
   * first (bounded by its descriptor's size): a blob that is not the one its digest names is
   * reported as that, not as whatever its wrong bytes broke. Releases the source either way.
   */
  fail: (err: unknown) => Promise<unknown>
}

/**
 * An iterator's steps, one at a time, each seen by `onChunk`, whose `return()` does not end the
 * iterator below: a consumer stopping early leaves the rest for {@link Tap.drain}.
 */
class Tap {
  done = false
  error: unknown
  private chain: Promise<unknown> = Promise.resolve()

  constructor (private readonly it: AsyncIterator<Uint8Array>, private readonly onChunk: (chunk: Uint8Array) => void | Promise<void>) {}

  async next (): Promise<IteratorResult<Uint8Array>> {
    // A consumer that was destroyed may leave a step in flight; later steps queue behind it.
    const step = this.chain.then(async (): Promise<IteratorResult<Uint8Array>> => {
      if (this.done) return { done: true, value: undefined }
      try {
        const r = await this.it.next()
        if (r.done === true) this.done = true
        else await this.onChunk(r.value)
        return r
      } catch (err) {
        this.done = true
        this.error ??= err
        throw err
      }
    })
    this.chain = step.catch(() => {})
    return await step
  }

  iterable (): AsyncIterable<Uint8Array> {
    return {
      [Symbol.asyncIterator]: () => ({
        next: async () => await this.next(),
        return: async () => ({ done: true, value: undefined })
      })
    }
  }

  /** Reads to the end; throws what any step threw. */
  async drain (): Promise<void> {
    while (!this.done) await this.next()
    if (this.error != null) throw this.error
  }

  async close (): Promise<void> {
    this.done = true
    await this.it.return?.(undefined)
  }
}

/** Opens a layer of `source` for reading as a tar; see {@link SourceLayer}. */
export async function openSourceLayer (source: ImageReader, desc: Descriptor, options: SourceLayerOptions = {}): Promise<SourceLayer> {
  const { signal } = options
  // fetch verifies digest and size, but only once its stream is read to the end.
  const raw = new Tap((await source.fetch(desc, signal))[Symbol.asyncIterator](), options.onCompressed ?? (() => {}))
  let compression: InputCompression
  let plain: Tap
  const diff = new Digester(options.diffID != null ? parseDigest(options.diffID).algorithm : 'sha256')
  try {
    const decompressed = await decompressInput(raw.iterable())
    compression = decompressed.compression
    plain = new Tap(decompressed.stream[Symbol.asyncIterator](), (chunk) => { diff.update(chunk) })
  } catch (err) {
    await raw.close().catch(() => {})
    throw err
  }

  const close = async (): Promise<void> => {
    await plain.close().catch(() => {})
    await raw.close().catch(() => {})
  }
  const fail = async (err: unknown): Promise<unknown> => {
    try {
      if (raw.error != null) return raw.error
      const fromInput = err instanceof EstargzError && signal?.aborted !== true
      if (!fromInput) return err
      await raw.drain()
      return err
    } catch (rawErr) {
      return rawErr
    } finally {
      await close()
    }
  }
  const finish = async (): Promise<VerifiedLayer> => {
    try {
      await plain.drain() // the tar's padding after its end marker, and whatever follows it
      await raw.drain() // what the decompressor did not ask for (a gzip trailer, bytes after it)
    } catch (err) {
      throw await fail(err)
    }
    const diffID = diff.digest()
    if (options.diffID != null && diffID !== options.diffID) throw new DiffIdMismatchError(desc.digest, options.diffID, diffID, source.name)
    return { compression, diffID, uncompressedSize: diff.bytes }
  }
  return { compression, tar: plain.iterable(), finish, fail }
}
