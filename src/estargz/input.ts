import { Readable, pipeline } from 'node:stream'
import zlib from 'node:zlib'
import { Decompress as ZstdDecompress } from 'fzstd'
import { MalformedGzipError } from './errors.js'

export type InputCompression = 'none' | 'gzip' | 'zstd'

/** Tells plain tar from gzip (`1f 8b 08`) and zstd (`28 b5 2f fd`) by the first bytes. */
export function detectCompression (head: Uint8Array): InputCompression {
  if (head.length >= 3 && head[0] === 0x1f && head[1] === 0x8b && head[2] === 0x08) return 'gzip'
  if (head.length >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return 'zstd'
  return 'none'
}

/** Re-yields a stream after the first `n` bytes have been looked at. */
async function peek (source: AsyncIterable<Uint8Array>, n: number): Promise<{ head: Uint8Array, stream: AsyncIterable<Uint8Array> }> {
  const it = source[Symbol.asyncIterator]()
  const seen: Uint8Array[] = []
  let have = 0
  let ended = false
  while (have < n) {
    const { done, value } = await it.next()
    if (done === true) { ended = true; break }
    seen.push(value)
    have += value.length
  }
  const head = Buffer.concat(seen)
  async function * stream (): AsyncGenerator<Uint8Array> {
    if (head.length > 0) yield head
    if (ended) return
    while (true) {
      const { done, value } = await it.next()
      if (done === true) return
      yield value
    }
  }
  return { head, stream: stream() }
}

/** `zlib.createZstdDecompress` appeared in Node 22.15; Node 20 uses the pure-JS fzstd. */
type ZstdFactory = () => NodeJS.ReadWriteStream
const nativeZstd = (zlib as unknown as { createZstdDecompress?: ZstdFactory }).createZstdDecompress

async function * zstdDecompress (source: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const out: Uint8Array[] = []
  const d = new ZstdDecompress((chunk) => { out.push(chunk) })
  try {
    for await (const chunk of source) {
      d.push(chunk)
      while (out.length > 0) yield out.shift() as Uint8Array
    }
    d.push(new Uint8Array(0), true)
  } catch (err) {
    throw new MalformedGzipError(`invalid zstd input: ${(err as Error).message}`)
  }
  while (out.length > 0) yield out.shift() as Uint8Array
}

async function * throughNodeStream (source: AsyncIterable<Uint8Array>, transform: NodeJS.ReadWriteStream, what: string): AsyncGenerator<Uint8Array> {
  const out = pipeline(Readable.from(source, { objectMode: false }), transform, () => {}) as unknown as AsyncIterable<Uint8Array>
  try {
    for await (const chunk of out) yield chunk
  } catch (err) {
    const e = err as NodeJS.ErrnoException // Node's zlib and zstd errors, known by their code
    if (e.code?.startsWith('Z_') === true || e.code?.startsWith('ERR_ZSTD') === true) throw new MalformedGzipError(`invalid ${what} input: ${e.message}`)
    throw err
  }
}

/** Decompressed bytes per step of a gzip input. */
const INFLATE_CHUNK_BYTES = 256 << 10

/**
 * Undoes gzip or zstd compression of a layer, if any; plain tar passes through. The compression
 * is told by the first bytes unless the caller knows it.
 */
export async function decompressInput (source: AsyncIterable<Uint8Array>, known?: InputCompression): Promise<{ compression: InputCompression, stream: AsyncIterable<Uint8Array> }> {
  let compression = known
  let stream = source
  if (compression == null) {
    const peeked = await peek(source, 4)
    compression = detectCompression(peeked.head)
    stream = peeked.stream
  }
  // 256 KiB out per thread-pool round trip instead of zlib's 16 KiB: a sixteenth of the callbacks
  if (compression === 'gzip') return { compression, stream: throughNodeStream(stream, zlib.createGunzip({ chunkSize: INFLATE_CHUNK_BYTES }), 'gzip') }
  if (compression === 'zstd') {
    return { compression, stream: nativeZstd != null ? throughNodeStream(stream, nativeZstd(), 'zstd') : zstdDecompress(stream) }
  }
  return { compression, stream }
}
