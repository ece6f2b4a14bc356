import { MalformedTocError } from './errors.js'
import { goMarshalIndent, type GoJsonValue } from './go-json.js'

export type TocEntryType = 'dir' | 'reg' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo' | 'chunk'

/**
 * One TOC entry as stored in `stargz.index.json` (the reference's `TOCEntry`). Zero values are
 * omitted on the wire; readers treat a missing field as zero.
 */
export interface TocEntry {
  name: string
  type: TocEntryType
  size?: number
  /** RFC 3339, UTC, whole seconds. */
  modtime?: string
  linkName?: string
  mode?: number
  uid?: number
  gid?: number
  userName?: string
  groupName?: string
  /** Compressed offset of the gzip member holding this entry's (chunk's) data. */
  offset?: number
  /** Uncompressed offset inside the stream starting at `offset` (min-chunk-size images). */
  innerOffset?: number
  devMajor?: number
  devMinor?: number
  /** Extended attributes; values base64 (standard, padded), as Go encodes `[]byte`. */
  xattrs?: Record<string, string>
  /** sha256 of the whole file (every `reg`, empty ones included). */
  digest?: string
  chunkOffset?: number
  /** Bytes in this chunk; 0/missing means "to the end of the file". */
  chunkSize?: number
  /** sha256 of this chunk's uncompressed bytes. */
  chunkDigest?: string
}

export interface Toc {
  version: number
  entries: TocEntry[]
}

const TYPES = new Set<TocEntryType>(['dir', 'reg', 'symlink', 'hardlink', 'char', 'block', 'fifo', 'chunk'])

/** Wire order of the keys: the Go struct's field order. */
const KEYS = [
  'name', 'type', 'size', 'modtime', 'linkName', 'mode', 'uid', 'gid', 'userName', 'groupName',
  'offset', 'innerOffset', 'devMajor', 'devMinor', 'xattrs', 'digest', 'chunkOffset', 'chunkSize', 'chunkDigest'
] as const satisfies ReadonlyArray<keyof TocEntry>

const NUMBER_KEYS = new Set(['size', 'mode', 'uid', 'gid', 'offset', 'innerOffset', 'devMajor', 'devMinor', 'chunkOffset', 'chunkSize'])

/** How each known key is checked (a Map: a key such as `constructor` must not find anything). */
type KeyKind = 'number' | 'string' | 'digest' | 'xattrs'
const KEY_KINDS = new Map<string, KeyKind>(KEYS.filter(k => k !== 'name' && k !== 'type').map(k => [k,
  NUMBER_KEYS.has(k) ? 'number' : k === 'xattrs' ? 'xattrs' : k === 'digest' || k === 'chunkDigest' ? 'digest' : 'string']))
const DIGEST = /^sha256:[0-9a-f]{64}$/
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/

function entryToGo (e: TocEntry): GoJsonValue {
  const out: Record<string, GoJsonValue> = {}
  for (const k of KEYS) {
    const v = e[k]
    if (k === 'name' || k === 'type') {
      out[k] = v as string
    } else if (k === 'xattrs') {
      const x = v as Record<string, string> | undefined
      if (x == null) continue
      const keys = Object.keys(x).sort(compareUtf8)
      if (keys.length === 0) continue
      const o: Record<string, GoJsonValue> = {}
      for (const key of keys) o[key] = x[key]
      out[k] = o
    } else if (v !== undefined && v !== 0 && v !== '') {
      out[k] = v as GoJsonValue
    }
  }
  return out
}

/** Go sorts map keys by their UTF-8 bytes; JS `<` compares UTF-16 units. */
function compareUtf8 (a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'))
}

/** Encodes a TOC exactly as `json.MarshalIndent(toc, "", "\t")` in the reference writer. */
export function encodeToc (toc: Toc): Uint8Array {
  const doc: GoJsonValue = { version: toc.version, entries: toc.entries.map(entryToGo) }
  return Buffer.from(goMarshalIndent(doc), 'utf8')
}

function fail (message: string): never {
  throw new MalformedTocError(`malformed TOC: ${message}`)
}

/**
 * One entry of parsed JSON checked, and returned as the entry itself when it holds only known
 * keys with non-null values (nearly always: no copy of thousands of objects per layer open);
 * otherwise a copy without the unknown keys (`NumLink` of old images) and nulls.
 */
function checkEntry (raw: unknown, i: number): TocEntry {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(`entry ${i} is not an object`)
  const r = raw as Record<string, unknown>
  if (typeof r.name !== 'string') fail(`entry ${i} has no name`)
  if (typeof r.type !== 'string' || !TYPES.has(r.type as TocEntryType)) fail(`entry ${i} (${JSON.stringify(r.name)}) has unknown type ${JSON.stringify(r.type)}`)
  const where = (): string => `entry ${i} (${JSON.stringify(r.name)})`
  let asIs = true
  for (const k of Object.keys(r)) {
    if (k === 'name' || k === 'type') continue
    const kind = KEY_KINDS.get(k)
    const v = r[k]
    if (kind == null || v === null) {
      asIs = false
      continue
    }
    if (kind === 'number') {
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(`${where()}: "${k}" is not a non-negative integer`)
    } else if (kind === 'xattrs') {
      if (typeof v !== 'object' || Array.isArray(v)) fail(`${where()}: "xattrs" is not an object`)
      for (const [xk, xv] of Object.entries(v as Record<string, unknown>)) {
        if (typeof xv !== 'string' || !BASE64.test(xv)) fail(`${where()}: xattr ${JSON.stringify(xk)} is not base64`)
      }
    } else {
      if (typeof v !== 'string') fail(`${where()}: "${k}" is not a string`)
      if (kind === 'digest' && !DIGEST.test(v)) fail(`${where()}: "${k}" is not a sha256 digest`)
    }
  }
  if (asIs) return r as unknown as TocEntry
  const e: Record<string, unknown> = { name: r.name, type: r.type }
  for (const k of KEYS) if (k !== 'name' && k !== 'type' && r[k] != null) e[k] = r[k]
  return e as unknown as TocEntry
}

/**
 * Parses and type-checks TOC JSON from an untrusted blob. Unknown keys (`NumLink` in old images)
 * are ignored; a field of the wrong type, a negative number or an unknown entry type is an error.
 */
export function parseToc (json: Uint8Array): Toc {
  let doc: unknown
  try {
    doc = JSON.parse(Buffer.from(json.buffer, json.byteOffset, json.byteLength).toString('utf8'))
  } catch (err) {
    fail(`not JSON (${(err as Error).message})`)
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) fail('not a JSON object')
  const { version, entries } = doc as { version?: unknown, entries?: unknown }
  if (version !== 1) fail(`unsupported version ${JSON.stringify(version)} (want 1)`)
  if (entries === null || entries === undefined) return { version: 1, entries: [] }
  if (!Array.isArray(entries)) fail('"entries" is not an array')
  const out: TocEntry[] = new Array(entries.length)
  for (let i = 0; i < entries.length; i++) out[i] = checkEntry(entries[i], i)
  return { version: 1, entries: out }
}

/** `t.UTC().Round(time.Second).Format(time.RFC3339)`, or `undefined` for the zero/epoch time. */
export function formatModtime (seconds: number): string | undefined {
  // Go omits the field when t.Unix() (whole seconds, floored) is 0, before rounding.
  if (!Number.isFinite(seconds) || Math.floor(seconds) === 0) return undefined
  const rounded = Math.floor(seconds + 0.5)
  const d = new Date(rounded * 1000)
  if (Number.isNaN(d.getTime())) return undefined
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z')
}

/** Parses a TOC `modtime` back to seconds since the epoch (0 when missing or invalid). */
export function parseModtime (s: string | undefined): number {
  if (s == null || s === '') return 0
  const ms = Date.parse(s)
  return Number.isNaN(ms) ? 0 : Math.floor(ms / 1000)
}
