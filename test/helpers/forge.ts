import zlib from 'node:zlib'
import { makeTar } from '../../scripts/fixtures/tar.js'
import { sha256 } from '../../scripts/fixtures/digest.js'

/**
 * Hand-made eStargz blobs for reader and bad-input tests, built with zlib and plain JSON — not
 * with the writer under test — so the reader is checked against the format, not against itself.
 */
export interface TocJson { version: number, entries: Array<Record<string, unknown>> }

export function footer51 (tocOffset: number): Buffer {
  return Buffer.concat([
    Buffer.from([0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 26, 0, 0x53, 0x47, 22, 0]),
    Buffer.from(tocOffset.toString(16).padStart(16, '0') + 'STARGZ', 'latin1'),
    Buffer.from([1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0])
  ])
}

export function footer47 (tocOffset: number): Buffer {
  return Buffer.concat([
    Buffer.from([0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 22, 0]),
    Buffer.from(tocOffset.toString(16).padStart(16, '0') + 'STARGZ', 'latin1'),
    Buffer.from([1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0])
  ])
}

export function tocMember (toc: TocJson | string): Buffer {
  const json = typeof toc === 'string' ? toc : JSON.stringify(toc, null, '\t')
  return zlib.gzipSync(makeTar([{ name: 'stargz.index.json', data: json, mode: 0, mtime: 0 }]))
}

/** The TOC digest of what {@link tocMember} stores. */
export function tocDigestOf (toc: TocJson | string): string {
  return sha256(typeof toc === 'string' ? toc : JSON.stringify(toc, null, '\t'))
}

export function tocOffsetOf (blob: Buffer): number {
  return parseInt(blob.subarray(blob.length - 35, blob.length - 19).toString('latin1'), 16)
}

export function readTocJson (blob: Buffer): TocJson {
  const tar = zlib.gunzipSync(blob.subarray(tocOffsetOf(blob), blob.length - 51))
  const size = parseInt(tar.subarray(124, 136).toString('latin1').replace(/\0.*$/, ''), 8)
  return JSON.parse(tar.subarray(512, 512 + size).toString('utf8')) as TocJson
}

/** Replaces the TOC of a blob with a modified one, keeping everything before it. */
export function forgeToc (blob: Buffer, mutate: (toc: TocJson) => TocJson | string | void): { blob: Buffer, tocDigest: string } {
  const off = tocOffsetOf(blob)
  const toc = readTocJson(blob)
  const changed = mutate(toc) ?? toc
  return { blob: Buffer.concat([blob.subarray(0, off), tocMember(changed), footer51(off)]), tocDigest: tocDigestOf(changed) }
}

/** A blob from raw file contents laid out by hand: one gzip member per given group of files. */
export function handmadeBlob (groups: Array<Array<{ name: string, data: Buffer }>>, opts: { legacyFooter?: boolean, extraKeys?: Record<string, unknown>, noChunkDigest?: boolean } = {}): { blob: Buffer, toc: TocJson, tocDigest: string } {
  const parts: Buffer[] = []
  const entries: Array<Record<string, unknown>> = []
  let offset = 0
  for (const group of groups) {
    const member = zlib.gzipSync(Buffer.concat(group.map(f => f.data)))
    let inner = 0
    for (const f of group) {
      entries.push({ name: f.name, type: 'reg', size: f.data.length, offset, ...(inner > 0 ? { innerOffset: inner } : {}), digest: sha256(f.data), ...(opts.noChunkDigest === true ? {} : { chunkDigest: sha256(f.data) }), ...opts.extraKeys })
      inner += f.data.length
    }
    parts.push(member)
    offset += member.length
  }
  const toc: TocJson = { version: 1, entries }
  const body = Buffer.concat([...parts, tocMember(toc)])
  const blob = Buffer.concat([body, opts.legacyFooter === true ? footer47(offset) : footer51(offset)])
  return { blob, toc, tocDigest: tocDigestOf(toc) }
}

/** A zstd frame made of raw (stored) blocks: valid zstd without a zstd compressor. */
export function zstdRawFrame (data: Buffer): Buffer {
  const parts: Uint8Array[] = [Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38])] // no FCS, window 2^17
  const max = 128 * 1024
  for (let i = 0; i < data.length || i === 0; i += max) {
    const block = data.subarray(i, i + max)
    const last = i + max >= data.length ? 1 : 0
    const h = (block.length << 3) | last
    parts.push(Buffer.from([h & 0xff, (h >> 8) & 0xff, (h >> 16) & 0xff]), block)
    if (data.length === 0) break
  }
  return Buffer.concat(parts)
}
