import { describe, expect, it } from 'vitest'
import { lengthPrefixDecoder, varintBytes, type PrefixBytes } from '../../src/ipfs/length-prefix.js'

/** The bytes of a prefix as lpStream hands them over: a list, grown one byte at a time. */
function prefix (bytes: number[]): PrefixBytes {
  return { byteLength: bytes.length, get: (i: number) => bytes[i] }
}

function varint (n: number): number[] {
  const out: number[] = []
  for (let v = n; ; v = Math.floor(v / 128)) {
    if (v < 128) { out.push(v); return out }
    out.push((v % 128) | 0x80)
  }
}

class TooLong extends Error {}

describe('lengthPrefixDecoder', () => {
  it('decodes every length up to the frame cap, fed one byte at a time; short of the end it throws one RangeError, the same each time', () => {
    const decode = lengthPrefixDecoder(4 << 20, () => new TooLong())
    const incomplete: unknown[] = []
    for (const n of [0, 1, 127, 128, 300, 16_383, 16_384, 1 << 20, (4 << 20) + 1]) {
      const bytes = varint(n)
      for (let k = 1; k < bytes.length; k++) {
        try { decode(prefix(bytes.slice(0, k))) } catch (err) { incomplete.push(err) }
      }
      expect(decode(prefix(bytes))).toBe(n)
    }
    expect(incomplete.length).toBeGreaterThan(5)
    expect(incomplete.every(e => e instanceof RangeError && e === incomplete[0])).toBe(true)
  })

  it('ends a prefix longer than a frame under the cap needs with the caller\'s error (not a RangeError: lpStream stops reading)', () => {
    const decode = lengthPrefixDecoder(8193, (n) => new TooLong(`${n} bytes`))
    expect(varintBytes(8193)).toBe(2)
    expect(() => decode(prefix([0x80]))).toThrow(RangeError)
    expect(() => decode(prefix([0x80, 0x80]))).toThrow(TooLong)
    expect(() => decode(prefix([0xff, 0xff, 0xff, 0xff]))).toThrow('4 bytes')
  })
})
