import { setMaxListeners } from 'node:events'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'

/** An inclusive byte range of a resource. */
export interface ByteRange { start: number, end: number }

/**
 * The one range of a `Range: bytes=…` header, against a resource of `size` bytes: a range,
 * 'unsatisfiable' (answer 416), or undefined when the header is absent, malformed or asks for
 * several ranges (RFC 9110 lets a server ignore it and answer the whole resource).
 */
export function parseRange (header: string | undefined, size: number): ByteRange | 'unsatisfiable' | undefined {
  if (header == null) return undefined
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (m == null || (m[1] === '' && m[2] === '')) return undefined
  if (m[1] === '') {
    const suffix = Number(m[2])
    if (!Number.isSafeInteger(suffix)) return undefined
    if (suffix === 0 || size === 0) return 'unsatisfiable'
    return { start: Math.max(0, size - suffix), end: size - 1 }
  }
  const start = Number(m[1])
  const last = m[2] === '' ? size - 1 : Number(m[2])
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(last)) return undefined
  if (start >= size) return 'unsatisfiable'
  if (last < start) return undefined
  return { start, end: Math.min(last, size - 1) }
}

/** Sends `chunks` as the body with backpressure; a failure mid-stream destroys the response. */
export async function sendStream (res: ServerResponse, chunks: AsyncIterable<Uint8Array>): Promise<void> {
  await pipeline(Readable.from(chunks, { objectMode: false }), res)
}

/** An AbortSignal that fires when the client goes away before the answer is complete. */
export function clientGone (req: IncomingMessage, res: ServerResponse): AbortSignal {
  const ac = new AbortController()
  // every block a streaming answer reads at once follows it (a deadline each)
  setMaxListeners(Infinity, ac.signal)
  res.once('close', () => { if (!res.writableFinished) ac.abort() })
  req.once('aborted', () => { ac.abort() })
  return ac.signal
}

/** Whether an `If-None-Match` header names `etag` (or `*`). */
export function matchesEtag (header: string | undefined, etag: string): boolean {
  if (header == null) return false
  return header.split(',').map(s => s.trim().replace(/^W\//, '')).some(t => t === '*' || t === etag.replace(/^W\//, ''))
}
