import { readFile, rename, writeFile } from 'node:fs/promises'
import { CID } from 'multiformats/cid'
import type { Logger } from '../logging.js'
import { PRIVATE } from '../private-files.js'
import { InvalidOptionError } from './errors.js'
import { isRecordCid } from './record.js'

/** Known-records defaults, in one place. */
export const DEFAULTS = {
  /** Layers whose newest record is remembered; the one updated longest ago goes first. */
  maxLayers: 4096
} as const

/** The newest record known for a layer, and whether this node made it or received it. */
export interface KnownRecord {
  record: CID
  created: number
  own: boolean
}

/**
 * The newest record this node knows per layer CID (its own or one it fetched and checked), the
 * one it answers with. Kept in memory and in a small JSON file (`{"<layer>":{"record","created",
 * "own"}}`, written whole, private, through a temp file) so that a restarted node still shares
 * what it learned. A file that does not parse is logged and ignored: it only holds hints.
 */
export class KnownRecords {
  private readonly map = new Map<string, KnownRecord>()
  private saving: Promise<void> = Promise.resolve()
  private readonly maxLayers: number

  constructor (private readonly components: { logger: Logger }, private readonly options: { file?: string, maxLayers?: number } = {}) {
    this.maxLayers = options.maxLayers ?? DEFAULTS.maxLayers
    if (!Number.isSafeInteger(this.maxLayers) || this.maxLayers < 1) throw new InvalidOptionError(`known prefetch records: maxLayers must be a positive integer, got ${String(this.maxLayers)}`)
  }

  async load (): Promise<void> {
    const file = this.options.file
    if (file == null) return
    let doc: unknown
    try {
      doc = JSON.parse(await readFile(file, 'utf8'))
    } catch (err) {
      // Node's errno: no file yet is no records
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.components.logger.warn({ file, err: (err as Error).message }, 'ignoring an unreadable file of known prefetch records')
      return
    }
    if (doc == null || typeof doc !== 'object' || Array.isArray(doc)) return
    for (const [layer, v] of Object.entries(doc as Record<string, unknown>)) {
      const e = v as { record?: unknown, created?: unknown, own?: unknown } | null
      try {
        CID.parse(layer)
        const record = CID.parse(String(e?.record))
        if (!isRecordCid(record) || typeof e?.created !== 'number' || !Number.isSafeInteger(e.created) || e.created < 0) continue
        this.remember(layer, { record, created: e.created, own: e.own === true })
      } catch {}
    }
  }

  get (layer: string): KnownRecord | undefined {
    return this.map.get(layer)
  }

  /** Keeps `entry` if it is newer than the one known for `layer`; true when kept. */
  offer (layer: string, entry: KnownRecord): boolean {
    const known = this.map.get(layer)
    if (known != null && (known.created > entry.created || known.record.equals(entry.record))) return false
    this.remember(layer, entry)
    this.save()
    return true
  }

  get size (): number {
    return this.map.size
  }

  /** Resolves when the last change is written. */
  async flush (): Promise<void> {
    await this.saving
  }

  private remember (layer: string, entry: KnownRecord): void {
    this.map.delete(layer)
    this.map.set(layer, entry)
    while (this.map.size > this.maxLayers) this.map.delete(this.map.keys().next().value as string)
  }

  private save (): void {
    const file = this.options.file
    if (file == null) return
    this.saving = this.saving.then(async () => {
      const doc = Object.fromEntries([...this.map].map(([l, e]) => [l, { record: e.record.toString(), created: e.created, own: e.own }]))
      const tmp = `${file}.tmp`
      await writeFile(tmp, JSON.stringify(doc), { mode: PRIVATE.fileMode })
      await rename(tmp, file)
    }).catch((err: Error) => { this.components.logger.warn({ file, err: err.message }, 'saving the known prefetch records failed') })
  }
}
