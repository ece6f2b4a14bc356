import { FOOTER_SIZE, LEGACY_FOOTER_SIZE } from './constants.js'
import { BadFooterError } from './errors.js'

const latin1 = new TextDecoder('latin1')

/**
 * The 51-byte eStargz footer: an empty gzip member whose extra field (subfield `SG`, 22 bytes)
 * holds the TOC offset as `%016x` followed by `STARGZ`.
 */
export function encodeFooter (tocOffset: number): Uint8Array {
  if (!Number.isSafeInteger(tocOffset) || tocOffset < 0) throw new RangeError(`invalid TOC offset ${tocOffset}`)
  const out = new Uint8Array(FOOTER_SIZE)
  out.set([0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 26, 0, 0x53, 0x47, 22, 0])
  out.set(Buffer.from(tocOffset.toString(16).padStart(16, '0') + 'STARGZ', 'latin1'), 16)
  out.set([0x01, 0x00, 0x00, 0xff, 0xff], 38) // final empty stored block; CRC32 and ISIZE are 0
  return out
}

export interface ParsedFooter {
  tocOffset: number
  /** 51 for eStargz, 47 for the legacy CRFS stargz footer. */
  footerSize: number
}

/**
 * Parses the footer from the last bytes of a blob (at least 47; 51 when the blob is that
 * large), trying the eStargz form first, then the legacy one, like the reference reader.
 */
export function parseFooter (tail: Uint8Array): ParsedFooter {
  const errors: string[] = []
  if (tail.length >= FOOTER_SIZE) {
    const f = tail.subarray(tail.length - FOOTER_SIZE)
    const r = tryParse(f, true)
    if (typeof r === 'number') return { tocOffset: r, footerSize: FOOTER_SIZE }
    errors.push(r)
  }
  if (tail.length >= LEGACY_FOOTER_SIZE) {
    const f = tail.subarray(tail.length - LEGACY_FOOTER_SIZE)
    const r = tryParse(f, false)
    if (typeof r === 'number') return { tocOffset: r, footerSize: LEGACY_FOOTER_SIZE }
    errors.push(r)
  } else {
    throw new BadFooterError(`blob too small for a footer (${tail.length} bytes)`)
  }
  throw new BadFooterError(`no eStargz footer: ${errors[0]}`)
}

function tryParse (f: Uint8Array, modern: boolean): number | string {
  if (f[0] !== 0x1f || f[1] !== 0x8b || f[2] !== 0x08) return 'not a gzip header'
  if ((f[3] & 0x04) === 0) return 'gzip header has no extra field'
  const xlen = f[10] | (f[11] << 8)
  let payload: Uint8Array
  if (modern) {
    if (xlen !== 26) return `extra field is ${xlen} bytes, want 26`
    if (f[12] !== 0x53 || f[13] !== 0x47) return 'extra subfield is not "SG"'
    if ((f[14] | (f[15] << 8)) !== 22) return 'extra subfield length is not 22'
    payload = f.subarray(16, 38)
  } else {
    if (xlen !== 22) return `extra field is ${xlen} bytes, want 22`
    payload = f.subarray(12, 34)
  }
  const text = latin1.decode(payload)
  if (!text.endsWith('STARGZ')) return 'extra field does not end in "STARGZ"'
  const hex = text.slice(0, 16)
  if (!/^[0-9a-fA-F]{16}$/.test(hex)) return `TOC offset ${JSON.stringify(hex)} is not hex`
  const off = parseInt(hex, 16)
  if (!Number.isSafeInteger(off)) return 'TOC offset out of range'
  return off
}
