import { MalformedTarError, UnsupportedTarEntryError } from '../errors.js'

export const BLOCK_SIZE = 512

/** Entry types as the TOC names them. */
export type EntryType = 'reg' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo'

/** One tar entry's metadata after PAX and GNU extensions are applied. */
export interface TarHeader {
  name: string
  type: EntryType
  /** Raw mode field (permission bits, setuid/setgid/sticky, sometimes S_IFMT bits). */
  mode: number
  uid: number
  gid: number
  uname: string
  gname: string
  /** Payload size in bytes (0 for everything but regular files). */
  size: number
  /** Modification time in seconds since the epoch; fractional when PAX gave nanoseconds. */
  mtime: number
  linkName: string
  devMajor: number
  devMinor: number
  /** `SCHILY.xattr.*` PAX records, values as raw bytes (capabilities are binary). */
  xattrs: Map<string, Uint8Array>
}

const utf8 = new TextDecoder('utf-8')
const latin1 = new TextDecoder('latin1')

function field (block: Uint8Array, start: number, length: number): Uint8Array {
  const f = block.subarray(start, start + length)
  const nul = f.indexOf(0)
  return nul < 0 ? f : f.subarray(0, nul)
}

function str (block: Uint8Array, start: number, length: number): string {
  return utf8.decode(field(block, start, length))
}

/** Parses a numeric field: NUL/space-terminated octal, or GNU/star base-256. */
function num (block: Uint8Array, start: number, length: number, what: string): number {
  const f = block.subarray(start, start + length)
  if ((f[0] & 0x80) !== 0) {
    // base-256: two's complement big-endian, the top bit of the first byte flags the encoding
    let v = BigInt(f[0] & 0x7f) - ((f[0] & 0x40) !== 0 ? 0x80n : 0n)
    for (let i = 1; i < f.length; i++) v = (v << 8n) | BigInt(f[i])
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw new MalformedTarError(`tar header ${what} field is out of range`)
    }
    return Number(v)
  }
  const s = latin1.decode(f).replace(/[\0 ]+$/, '').replace(/^[\0 ]+/, '')
  if (s === '') return 0
  if (!/^[0-7]+$/.test(s)) throw new MalformedTarError(`tar header ${what} field is not octal: ${JSON.stringify(s)}`)
  return parseInt(s, 8)
}

/** The size field of a header block (for extension headers, the size of their payload). */
export function sizeField (block: Uint8Array): number {
  const size = num(block, 124, 12, 'size')
  if (!Number.isSafeInteger(size) || size < 0) throw new MalformedTarError('tar header has an invalid size')
  return size
}

/** True when a 512-byte block is all zeros (end-of-archive marker). */
export function isZeroBlock (block: Uint8Array): boolean {
  for (let i = 0; i < BLOCK_SIZE; i++) if (block[i] !== 0) return false
  return true
}

/** Verifies a header block's checksum (unsigned, or signed as some old tars wrote it). */
export function checksumOk (block: Uint8Array): boolean {
  let stored: number
  try {
    stored = num(block, 148, 8, 'checksum')
  } catch {
    return false
  }
  let unsigned = 0
  let signed = 0
  for (let i = 0; i < BLOCK_SIZE; i++) {
    const b = (i >= 148 && i < 156) ? 0x20 : block[i]
    unsigned += b
    signed += b > 127 ? b - 256 : b
  }
  return stored === unsigned || stored === signed
}

/** Rounds a payload size up to whole blocks. */
export function paddedSize (size: number): number {
  return Math.ceil(size / BLOCK_SIZE) * BLOCK_SIZE
}

/** Parses the records of a PAX extended header payload (`"%d %s=%s\n"`), values kept as bytes. */
export function parsePaxRecords (data: Uint8Array): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>()
  let i = 0
  while (i < data.length) {
    if (data[i] === 0) break // some writers pad the payload with NULs
    const sp = data.indexOf(0x20, i)
    if (sp < 0) throw new MalformedTarError('malformed PAX record: no length')
    const len = Number(latin1.decode(data.subarray(i, sp)))
    if (!Number.isInteger(len) || len <= sp - i + 1 || i + len > data.length || data[i + len - 1] !== 0x0a) {
      throw new MalformedTarError('malformed PAX record length')
    }
    const rec = data.subarray(sp + 1, i + len - 1)
    const eq = rec.indexOf(0x3d)
    if (eq <= 0) throw new MalformedTarError('malformed PAX record: no key')
    out.set(utf8.decode(rec.subarray(0, eq)), rec.subarray(eq + 1))
    i += len
  }
  return out
}

const TYPES: Record<string, EntryType> = {
  0: 'reg', '\0': 'reg', 7: 'reg', 1: 'hardlink', 2: 'symlink', 3: 'char', 4: 'block', 5: 'dir', 6: 'fifo'
}

/** Typeflags of extension headers, which describe the entry that follows them. */
export const EXTENSION_TYPES = new Set(['x', 'g', 'L', 'K'])

/** The raw typeflag character of a header block. */
export function typeflag (block: Uint8Array): string {
  return String.fromCharCode(block[156])
}

/** Entries from headers that override fields of the next main header. */
export interface Extensions {
  pax: Map<string, Uint8Array>
  gnuLongName?: string
  gnuLongLink?: string
}

/**
 * Parses a main (non-extension) header block, applying PAX/GNU extensions. Throws
 * {@link UnsupportedTarEntryError} for entries eStargz cannot represent.
 */
export function parseHeader (block: Uint8Array, ext: Extensions): TarHeader {
  const flag = typeflag(block)
  const magic = latin1.decode(block.subarray(257, 263))
  const isUstar = magic === 'ustar\0'
  let name = str(block, 0, 100)
  if (isUstar) {
    const prefix = str(block, 345, 155)
    if (prefix !== '') name = `${prefix}/${name}`
  }
  let linkName = str(block, 157, 100)
  let size = num(block, 124, 12, 'size')
  let uid = num(block, 108, 8, 'uid')
  let gid = num(block, 116, 8, 'gid')
  let mtime = num(block, 136, 12, 'mtime')
  let uname = str(block, 265, 32)
  let gname = str(block, 297, 32)
  const xattrs = new Map<string, Uint8Array>()

  if (ext.gnuLongName != null) name = ext.gnuLongName
  if (ext.gnuLongLink != null) linkName = ext.gnuLongLink
  for (const [key, value] of ext.pax) {
    const text = (): string => utf8.decode(value)
    const number = (): number => {
      const n = Number(text())
      if (!Number.isFinite(n)) throw new MalformedTarError(`PAX record ${key} is not a number`)
      return n
    }
    // Ids are integers, as Go's reader (strconv.ParseInt) demands; a fraction cannot reach a TOC.
    const integer = (): number => {
      const n = number()
      if (!Number.isSafeInteger(n)) throw new MalformedTarError(`PAX record ${key} is not an integer`)
      return n
    }
    if (key === 'path') name = text()
    else if (key === 'linkpath') linkName = text()
    else if (key === 'size') size = number()
    else if (key === 'uid') uid = integer()
    else if (key === 'gid') gid = integer()
    else if (key === 'uname') uname = text()
    else if (key === 'gname') gname = text()
    else if (key === 'mtime') mtime = number()
    else if (key.startsWith('SCHILY.xattr.')) xattrs.set(key.slice('SCHILY.xattr.'.length), value)
    else if (key.startsWith('GNU.sparse.')) throw new UnsupportedTarEntryError(`unsupported input tar entry ${JSON.stringify(name)}: GNU sparse file`)
  }

  let type = TYPES[flag]
  if (type == null) {
    const what = flag === 'S' ? 'GNU sparse file' : flag === 'V' ? 'volume header' : flag === 'M' ? 'multi-volume continuation' : flag === 'D' ? 'GNU dump directory' : `typeflag ${JSON.stringify(flag)}`
    throw new UnsupportedTarEntryError(`unsupported input tar entry ${JSON.stringify(name)}: ${what}`)
  }
  // V7 tars mark directories only by the trailing slash of a regular entry.
  if (flag === '\0' && name.endsWith('/')) type = 'dir'
  if (!Number.isSafeInteger(size) || size < 0) throw new MalformedTarError(`tar entry ${JSON.stringify(name)} has an invalid size`)
  // Header-only types carry no payload whatever their size field says (as Go's reader does).
  if (type !== 'reg') size = 0

  return {
    name,
    type,
    mode: num(block, 100, 8, 'mode'),
    uid,
    gid,
    uname,
    gname,
    size,
    mtime,
    linkName,
    devMajor: type === 'char' || type === 'block' ? num(block, 329, 8, 'devmajor') : 0,
    devMinor: type === 'char' || type === 'block' ? num(block, 337, 8, 'devminor') : 0,
    xattrs
  }
}

// ---- encoding (only what the writer adds itself: the TOC entry and landmarks) ----

function putString (block: Uint8Array, start: number, length: number, s: string): void {
  const b = Buffer.from(s, 'utf8')
  if (b.length > length) throw new MalformedTarError(`tar field too long: ${JSON.stringify(s)}`)
  block.set(b, start)
}

function putOctal (block: Uint8Array, start: number, length: number, n: number): void {
  // Go's formatOctal: zero-padded to length-1 digits, NUL-terminated.
  putString(block, start, length, n.toString(8).padStart(length - 1, '0'))
}

/**
 * Encodes a USTAR header for a regular file with only name and size set, byte for byte what
 * Go's archive/tar writes for `tar.Header{Typeflag: TypeReg, Name, Size}` (the reference's TOC
 * and landmark headers).
 */
export function encodeMinimalRegHeader (name: string, size: number): Uint8Array {
  const block = new Uint8Array(BLOCK_SIZE)
  putString(block, 0, 100, name)
  putOctal(block, 100, 8, 0)
  putOctal(block, 108, 8, 0)
  putOctal(block, 116, 8, 0)
  putOctal(block, 124, 12, size)
  putOctal(block, 136, 12, 0)
  block[156] = 0x30 // '0'
  putString(block, 257, 6, 'ustar')
  putString(block, 263, 2, '00')
  putOctal(block, 329, 8, 0)
  putOctal(block, 337, 8, 0)
  block.fill(0x20, 148, 156)
  let sum = 0
  for (let i = 0; i < BLOCK_SIZE; i++) sum += block[i]
  putString(block, 148, 7, sum.toString(8).padStart(6, '0'))
  block[154] = 0
  block[155] = 0x20
  return block
}
