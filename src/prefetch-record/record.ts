import { createHash } from 'node:crypto'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { create as createDigest } from 'multiformats/hashes/digest'
import { sha256 } from 'multiformats/hashes/sha2'
import { InvalidPrefetchRecordError } from './errors.js'

/** Record format limits, in one place (shared by the writer and the reader). */
export const DEFAULTS = {
  /** Ranges one record holds at most. */
  maxRanges: 2048,
  /**
   * Bytes of one record block, written or accepted: 2048 ranges of 16-digit numbers fit. Checked
   * before parsing: a peer cannot make us parse (or hold) more.
   */
  maxRecordBytes: 128 << 10,
  /** Bytes of a layer one record may make us prefetch (the sum of its ranges). */
  maxPrefetchBytes: 512 << 20,
  /**
   * A record claiming to be created further than this in the future is refused: a peer cannot
   * make its record the newest forever (it can for this long, see docs/learned-prefetch.md).
   */
  maxClockSkewMs: 10 * 60_000
} as const

export type RecordLimits = { -readonly [K in keyof typeof DEFAULTS]?: number }

/** The format's version; a record of another version is refused. */
export const RECORD_VERSION = 1

/**
 * The order in which a node first read one layer's bytes while containers ran: ranges of the
 * layer blob (compressed bytes, offset and length), first read first.
 */
export interface PrefetchRecord {
  /** CID of the layer blob (UnixFS file) the ranges belong to. */
  layer: string
  /** Size of that blob: ranges lie inside it. */
  size: number
  /** When the record was made (ms since the epoch): the newest record of a layer wins. */
  created: number
  /** [offset, length] pairs in first-read order; no two overlap. */
  ranges: Array<[number, number]>
}

/**
 * A record's block: JSON `{"v":1,"layer":…,"size":…,"created":…,"ranges":[[o,l],…]}`, stored raw
 * (codec raw, sha2-256), so any node, bitswap peer or gateway can hand it out by CID.
 */
export function encodeRecord (record: PrefetchRecord, limits: RecordLimits = {}): { cid: CID, bytes: Uint8Array } {
  const bytes = Buffer.from(JSON.stringify({ v: RECORD_VERSION, layer: record.layer, size: record.size, created: record.created, ranges: record.ranges }))
  const max = limits.maxRecordBytes ?? DEFAULTS.maxRecordBytes
  if (bytes.length > max) throw new InvalidPrefetchRecordError(`record for ${record.layer} is ${bytes.length} bytes, more than ${max}`)
  return { cid: recordCid(bytes), bytes }
}

/** The CID of a record block (raw, sha2-256). */
export function recordCid (bytes: Uint8Array): CID {
  return CID.createV1(raw.code, createDigest(sha256.code, createHash('sha256').update(bytes).digest()))
}

/** Whether a CID can name a record: raw codec and sha2-256, the only kind we write and fetch. */
export function isRecordCid (cid: CID): boolean {
  return cid.version === 1 && cid.code === raw.code && cid.multihash.code === sha256.code
}

/** What a record must match: the layer we mount, its real size, and our clock. */
export interface RecordExpectation {
  layer: string
  size: number
  now: number
}

/**
 * Parses and checks a record block against the layer it is used for. Every field is checked
 * (shape, version, layer, size, time, each range inside the blob, no overlap, the count and the
 * byte total within the limits); anything else is an InvalidPrefetchRecordError and the whole
 * record is ignored: a record is a hint, and one that names bytes that do not exist is wrong.
 */
export function decodeRecord (bytes: Uint8Array, expect: RecordExpectation, limits: RecordLimits = {}): PrefetchRecord {
  const lim = { ...DEFAULTS, ...limits }
  const bad = (why: string): InvalidPrefetchRecordError => new InvalidPrefetchRecordError(`prefetch record for ${expect.layer}: ${why}`)
  if (bytes.length > lim.maxRecordBytes) throw bad(`${bytes.length} bytes, more than ${lim.maxRecordBytes}`)
  let doc: unknown
  try {
    doc = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'))
  } catch (err) {
    throw bad(`not JSON (${(err as Error).message})`)
  }
  if (doc == null || typeof doc !== 'object' || Array.isArray(doc)) throw bad('not a JSON object')
  const o = doc as Record<string, unknown>
  const keys = Object.keys(o).sort().join(',')
  if (keys !== 'created,layer,ranges,size,v') throw bad(`fields ${JSON.stringify(keys)}, expected created, layer, ranges, size, v`)
  if (o.v !== RECORD_VERSION) throw bad(`version ${JSON.stringify(o.v)}, expected ${RECORD_VERSION}`)
  if (o.layer !== expect.layer) throw bad(`made for layer ${JSON.stringify(o.layer)}`)
  if (o.size !== expect.size) throw bad(`says the layer is ${JSON.stringify(o.size)} bytes, it is ${expect.size}`)
  if (!isCount(o.created)) throw bad(`created ${JSON.stringify(o.created)} is not a time`)
  if (o.created > expect.now + lim.maxClockSkewMs) throw bad(`created ${new Date(o.created).toISOString()}, in the future`)
  if (!Array.isArray(o.ranges)) throw bad('ranges is not a list')
  if (o.ranges.length > lim.maxRanges) throw bad(`${o.ranges.length} ranges, more than ${lim.maxRanges}`)
  const ranges: Array<[number, number]> = []
  const seen: Array<[number, number]> = []
  let total = 0
  for (const [i, r] of o.ranges.entries()) {
    if (!Array.isArray(r) || r.length !== 2 || !isCount(r[0]) || !isCount(r[1]) || r[1] === 0) throw bad(`range ${i} is not [offset, length > 0]`)
    const [offset, length] = r as [number, number]
    if (offset + length > expect.size) throw bad(`range ${i} (${offset}+${length}) ends past the layer's ${expect.size} bytes`)
    total += length
    if (total > lim.maxPrefetchBytes) throw bad(`ranges add up to more than ${lim.maxPrefetchBytes} bytes`)
    ranges.push([offset, length])
    seen.push([offset, offset + length])
  }
  seen.sort((a, b) => a[0] - b[0])
  for (let i = 1; i < seen.length; i++) if (seen[i][0] < seen[i - 1][1]) throw bad('ranges overlap')
  return { layer: expect.layer, size: expect.size, created: o.created, ranges }
}

function isCount (v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0
}
