import { promisify } from 'node:util'
import zlib from 'node:zlib'
import { MalformedGzipError, TruncatedBlobError } from './errors.js'

const deflateRaw = promisify(zlib.deflateRaw)

/**
 * gzip member header as Go's compress/gzip writes it: no name, no mtime, XFL 2 at level 9 and 4
 * at level 1, OS 255 ("unknown"). Node's own gzip would write OS 3; framing members ourselves
 * keeps the bytes independent of the platform.
 */
function memberHeader (level: number): Uint8Array {
  const xfl = level === 9 ? 2 : level === 1 ? 4 : 0
  return Uint8Array.of(0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, xfl, 0xff)
}

/**
 * Members up to this size deflate in one synchronous call: most members of a layer are small (tar
 * headers, small files), and for those the thread pool's stream machinery cost more CPU than the
 * deflate itself (a third of a push's main thread went to it).
 */
const SYNC_DEFLATE_MAX = 16 << 10
/** Synchronous deflates give the event loop a turn at least this often (ms): readers in the same process wait no longer. */
const SYNC_SLICE_MS = 5
let sliceStarted = 0

/**
 * Compresses `data` into one complete gzip member. A large member's deflate runs on libuv's
 * thread pool, so several compress in parallel while the caller keeps streaming; a small one's
 * runs here, in time slices. The output depends only on the input and level: the same bytes on
 * any machine and core count, either way.
 */
export async function gzipMember (data: Uint8Array, level: number): Promise<Uint8Array> {
  const options = { level, memLevel: 8, windowBits: 15, strategy: zlib.constants.Z_DEFAULT_STRATEGY }
  let body: Buffer
  if (data.length <= SYNC_DEFLATE_MAX) {
    if (performance.now() - sliceStarted > SYNC_SLICE_MS) {
      await new Promise(resolve => setImmediate(resolve))
      sliceStarted = performance.now()
    }
    body = zlib.deflateRawSync(data, options)
  } else {
    body = await deflateRaw(data, options)
  }
  const out = Buffer.allocUnsafe(10 + body.length + 8)
  out.set(memberHeader(level), 0)
  out.set(body, 10)
  out.writeUInt32LE(zlib.crc32(data), 10 + body.length)
  out.writeUInt32LE(data.length % 0x100000000, 14 + body.length)
  return out
}

/**
 * Chunks up to this size (compressed and decompressed) are inflated in one synchronous call: a
 * small file's chunk costs well under a millisecond of CPU, while a stream through libuv's thread
 * pool waits behind whatever else is queued there (disk cache writes) on every first read.
 */
const SYNC_INFLATE_MAX = 128 << 10
/** What a synchronous inflate may produce beyond the bytes wanted (the tar headers after a file's data). */
const SYNC_INFLATE_SLACK = 64 << 10

/**
 * The whole decompressed range in one synchronous call, or undefined when it is not that simple
 * (more output than expected, truncated or invalid data): the streaming path then decides.
 */
function inflateSmall (compressed: Uint8Array, want: number): Buffer | undefined {
  try {
    const out = zlib.gunzipSync(compressed, { maxOutputLength: want + SYNC_INFLATE_SLACK })
    return out.length >= want ? out : undefined
  } catch {
    return undefined
  }
}

/**
 * Decompresses gzip data (one or more members) and returns `length` bytes starting `skip` bytes
 * into the decompressed stream. Stops inflating as soon as it has them, so a chunk read never
 * inflates the rest of a shared member, and a member that decompresses to far more than
 * promised (a "zip bomb") costs nothing.
 */
export async function inflateRange (compressed: Uint8Array, skip: number, length: number): Promise<Uint8Array> {
  const want = skip + length
  if (length === 0) return new Uint8Array(0)
  if (want <= SYNC_INFLATE_MAX && compressed.length <= SYNC_INFLATE_MAX) {
    const out = inflateSmall(compressed, want)
    if (out != null) return out.subarray(skip, want)
  }
  return await new Promise<Uint8Array>((resolve, reject) => {
    const gunzip = zlib.createGunzip({ chunkSize: Math.min(Math.max(want, 16 * 1024), 4 << 20) })
    const parts: Buffer[] = []
    let got = 0
    let settled = false
    const finish = (err?: Error): void => {
      if (settled) return
      settled = true
      gunzip.removeAllListeners('data')
      gunzip.destroy()
      if (err != null) {
        reject(err)
        return
      }
      const all = parts.length === 1 ? parts[0] : Buffer.concat(parts, got)
      resolve(all.subarray(skip, want))
    }
    gunzip.on('data', (b: Buffer) => {
      parts.push(b)
      got += b.length
      if (got >= want) finish()
    })
    // zlib's errors are Node's, known by their code: Z_BUF_ERROR is input that ends early
    gunzip.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'Z_BUF_ERROR') finish(new TruncatedBlobError(`compressed data ends after ${got} of ${want} decompressed bytes`))
      else finish(new MalformedGzipError(`invalid gzip data: ${err.message}`))
    })
    gunzip.on('end', () => {
      if (got < want) finish(new TruncatedBlobError(`compressed data ends after ${got} of ${want} decompressed bytes`))
      else finish()
    })
    gunzip.end(compressed)
  })
}

/** Largest output piece `gunzipStream` asks zlib for. */
const GUNZIP_STREAM_MAX_CHUNK = 4 << 20

/**
 * Streams the decompressed bytes of gzip data, failing with `tooLarge()` once more than
 * `maxOutput` bytes come out, so a hostile member cannot exhaust memory.
 */
export async function * gunzipStream (compressed: Uint8Array, maxOutput: number, tooLarge: () => Error): AsyncGenerator<Uint8Array> {
  // Each output piece is a trip through libuv's thread pool: at zlib's 16 KiB a 2 MB TOC took
  // 128 of them (~100 ms on a busy node, on a mount's path); sized to the expected output
  // (JSON inflates ~6–8×), a TOC comes in one or two.
  const gunzip = zlib.createGunzip({ chunkSize: Math.min(GUNZIP_STREAM_MAX_CHUNK, Math.max(64 << 10, compressed.length * 8)) })
  gunzip.end(compressed)
  let total = 0
  try {
    for await (const chunk of gunzip as AsyncIterable<Buffer>) {
      total += chunk.length
      if (total > maxOutput) throw tooLarge()
      yield chunk
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException // zlib's (Node's) codes, as above
    if (e.code === 'Z_BUF_ERROR') throw new TruncatedBlobError(`compressed data ends early: ${e.message}`)
    if (e.code?.startsWith('Z_') === true) throw new MalformedGzipError(`invalid gzip data: ${e.message}`)
    throw err
  } finally {
    gunzip.destroy()
  }
}
