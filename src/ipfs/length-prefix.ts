import { lpStream, type LengthPrefixedStream } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'

/**
 * Length prefixes for `lpStream` (@libp2p/utils) that cost nothing while incomplete and end a
 * prefix that is too long. lpStream reads a prefix one byte at a time and asks its decoder after
 * each byte, taking a RangeError as "not complete yet": the stock varint decoder throws a fresh
 * one, its stack captured, for every byte short of a prefix (~2 % of a daemon's CPU while it
 * fetches small blocks), and its check of the prefix's length comes after that catch, so a prefix
 * of continuation bytes is read for as long as a peer sends them.
 */

/** The prefix is not complete yet: one instance, thrown again and again (no stack to capture). */
const INCOMPLETE = new RangeError('length prefix not complete yet')

/** What lpStream hands a decoder: the prefix's bytes so far (a Uint8ArrayList). */
export interface PrefixBytes {
  readonly byteLength: number
  get: (index: number) => number
}

/** Bytes of the unsigned varint that encodes `n`. */
export function varintBytes (n: number): number {
  let bytes = 1
  for (let v = n; v >= 0x80; v = Math.floor(v / 0x80)) bytes++
  return bytes
}

/**
 * An unsigned-varint length decoder for frames of at most `maxDataLength` bytes: a prefix longer
 * than such a frame needs fails with `tooLong` (not a RangeError, so lpStream stops reading).
 */
export function lengthPrefixDecoder (maxDataLength: number, tooLong: (bytes: number) => Error): (data: PrefixBytes) => number {
  const maxBytes = varintBytes(maxDataLength)
  return (data) => {
    let value = 0
    let scale = 1
    const n = data.byteLength
    for (let i = 0; i < n; i++) {
      const b = data.get(i)
      value += (b & 0x7f) * scale
      if (b < 0x80) return value
      scale *= 0x80
    }
    if (n >= maxBytes) throw tooLong(n)
    throw INCOMPLETE
  }
}

/**
 * `lpStream` over `stream` with frames of at most `maxDataLength` bytes, at most `maxBufferSize`
 * of them buffered unread, and our length decoder: every length-prefixed protocol of ours reads
 * its frames through this.
 */
export function lengthPrefixed (stream: Stream, limits: { maxDataLength: number, maxBufferSize: number }, tooLong: (bytes: number) => Error): LengthPrefixedStream<Stream> {
  return lpStream(stream, { ...limits, lengthDecoder: lengthPrefixDecoder(limits.maxDataLength, tooLong) })
}
