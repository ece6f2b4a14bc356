import { cleanEntryName, climbsOutOfRoot } from '../estargz/index.js'
import { DEFAULTS } from './config.js'
import { BadRecordError, RecordMismatchError } from './errors.js'

/**
 * One first access of a file by the workload, in the reference's record format (one JSON object
 * per line): the path without a leading slash, the manifest of the image the workload ran, and
 * the index (0 = bottom) of the topmost layer of that manifest holding the path.
 */
export interface RecordEntry {
  path: string
  manifestDigest: string
  layerIndex: number
}

/** The image whose layers a record indexes. */
export interface RecordedImage {
  manifestDigest: string
  layers: Array<{ digest: string }>
}

const DIGEST = /^sha256:[0-9a-f]{64}$/

/** A record path as the layer names it, or an error message. */
function cleanPath (path: string): string {
  if (Buffer.byteLength(path) > DEFAULTS.maxPathBytes) throw new Error(`path longer than ${DEFAULTS.maxPathBytes} bytes`)
  if (path.includes('\0')) throw new Error('path holds a NUL byte')
  if (climbsOutOfRoot(path)) throw new Error(`path ${JSON.stringify(path)} climbs out of the root`)
  const clean = cleanEntryName(path)
  if (clean === '') throw new Error('empty path (the root)')
  return clean
}

/**
 * Parses a record: JSON lines, blank lines ignored; bounded in entries. `name` says where it came
 * from in errors, which give the line.
 */
export function parseRecord (text: string, name = 'record', maxEntries: number = DEFAULTS.maxEntries): RecordEntry[] {
  const out: RecordEntry[] = []
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim()
    if (line === '') continue
    const where = `${name} line ${i + 1}`
    let v: unknown
    try {
      v = JSON.parse(line)
    } catch {
      throw new BadRecordError(`${where}: not JSON`)
    }
    if (typeof v !== 'object' || v == null || Array.isArray(v)) throw new BadRecordError(`${where}: not a JSON object`)
    const o = v as Record<string, unknown>
    if (typeof o.path !== 'string') throw new BadRecordError(`${where}: "path" must be a string`)
    if (typeof o.manifestDigest !== 'string' || !DIGEST.test(o.manifestDigest)) throw new BadRecordError(`${where}: "manifestDigest" must be sha256:<64 hex digits>`)
    if (typeof o.layerIndex !== 'number' || !Number.isSafeInteger(o.layerIndex) || o.layerIndex < 0) throw new BadRecordError(`${where}: "layerIndex" must be a non-negative integer`)
    let path: string
    try {
      path = cleanPath(o.path)
    } catch (err) {
      throw new BadRecordError(`${where}: ${(err as Error).message}`)
    }
    if (out.length >= maxEntries) throw new BadRecordError(`${name}: more than ${maxEntries} entries`)
    out.push({ path, manifestDigest: o.manifestDigest, layerIndex: o.layerIndex })
  }
  return out
}

/** A record as JSON lines, keys in the reference's order. */
export function formatRecord (entries: readonly RecordEntry[]): string {
  return entries.map(e => JSON.stringify({ path: e.path, manifestDigest: e.manifestDigest, layerIndex: e.layerIndex }) + '\n').join('')
}

/**
 * The prioritized files of each layer, by layer digest, in first-access order (a path once per
 * layer; a layer that appears twice gets the accesses of both places). Entries of manifests
 * that are not `images` are skipped, as the reference does; an entry whose layer index is out of
 * range, or a non-empty record that matches none of `images`, is a {@link RecordMismatchError}.
 */
export function prioritizedFilesByLayer (entries: readonly RecordEntry[], images: readonly RecordedImage[]): Map<string, string[]> {
  const out = new Map<string, string[]>()
  const seen = new Map<string, Set<string>>()
  const byManifest = new Map(images.map(i => [i.manifestDigest, i]))
  let matched = 0
  for (const e of entries) {
    const img = byManifest.get(e.manifestDigest)
    if (img == null) continue
    matched++
    const layer = img.layers[e.layerIndex]
    if (layer == null) throw new RecordMismatchError(`record entry ${JSON.stringify(e.path)} names layer ${e.layerIndex}, but manifest ${e.manifestDigest} has ${img.layers.length} layers`)
    let paths = out.get(layer.digest)
    let set = seen.get(layer.digest)
    if (paths == null || set == null) {
      paths = []
      set = new Set()
      out.set(layer.digest, paths)
      seen.set(layer.digest, set)
    }
    if (set.has(e.path)) continue
    set.add(e.path)
    paths.push(e.path)
  }
  if (entries.length > 0 && matched === 0) {
    const named = [...new Set(entries.map(e => e.manifestDigest))].slice(0, 3).join(', ')
    throw new RecordMismatchError(`the record is for manifest ${named}, not for the source's ${images.map(i => i.manifestDigest).join(', ')}`)
  }
  return out
}

/**
 * Collects a run's first accesses: one hook per layer (for `LayerFs`'s `onAccess`), each path
 * kept once per layer, in the order the accesses came.
 */
export class AccessRecorder {
  private readonly seen: Array<Set<string>>
  private readonly list: RecordEntry[] = []
  private dropped = 0

  constructor (private readonly manifestDigest: string, layers: number, private readonly maxEntries: number = DEFAULTS.maxEntries) {
    this.seen = Array.from({ length: layers }, () => new Set<string>())
  }

  /** The access hook of layer `layerIndex`. */
  hook (layerIndex: number): (path: string) => void {
    const seen = this.seen[layerIndex]
    return (path: string): void => {
      if (seen.has(path)) return
      if (this.list.length >= this.maxEntries) {
        this.dropped++
        return
      }
      seen.add(path)
      this.list.push({ path, manifestDigest: this.manifestDigest, layerIndex })
    }
  }

  /** Accesses not kept because the record was full. */
  get droppedEntries (): number {
    return this.dropped
  }

  entries (): RecordEntry[] {
    return [...this.list]
  }
}
