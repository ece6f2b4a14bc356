import type Database from 'better-sqlite3'
import type { Helia } from 'helia'
import { CID } from 'multiformats/cid'
import { checkAbort } from './dag-reader.js'
import { localWalker, type PinRecord, type PinStore } from './pins.js'
import type { LocalBlocks } from './walk.js'

export interface SqlitePinStoreComponents {
  /** The repo's index database: pins are rows of its `pins` table. */
  db: Database.Database
  /**
   * Helia's pins, where older versions pinned (a record per block of every pinned DAG): their
   * pins are listed and removed there; new pins never go there.
   */
  legacy: Helia['pins']
  localBlockstore: LocalBlocks
  /** Called after a pin is removed (its blocks may have become garbage). */
  onRemove?: () => void
}

interface Row { root: string, depth: number | null, metadata: string }

/**
 * Pins as one row per root. Garbage collection marks from the roots (walking each DAG), so a
 * record per block, as Helia's pins keep, is not needed: writing one file per block of a
 * 13,000-block image was a quarter of a push, and removing them a walk of the whole DAG.
 */
export class SqlitePinStore implements PinStore {
  private readonly db: Database.Database

  constructor (private readonly components: SqlitePinStoreComponents) {
    this.db = components.db
    // depth NULL: the whole DAG (recursive)
    this.db.exec('CREATE TABLE IF NOT EXISTS pins (root TEXT PRIMARY KEY, depth INTEGER, metadata TEXT NOT NULL)')
  }

  async get (cid: CID): Promise<PinRecord | undefined> {
    const row = this.db.prepare('SELECT root, depth, metadata FROM pins WHERE root = ?').get(cid.toString()) as Row | undefined
    if (row != null) return fromRow(row)
    try {
      const pin = await this.components.legacy.get(cid)
      return { cid, depth: pin.depth, metadata: pin.metadata ?? {} }
    } catch (err) {
      if ((err as Error).name === 'NotFoundError') return undefined
      throw err
    }
  }

  async put (pin: PinRecord): Promise<void> {
    this.db.prepare('INSERT OR REPLACE INTO pins (root, depth, metadata) VALUES (?, ?, ?)')
      .run(pin.cid.toString(), pin.depth === Infinity ? null : pin.depth, JSON.stringify(pin.metadata))
  }

  async delete (cid: CID, options: { signal?: AbortSignal } = {}): Promise<boolean> {
    let removed = this.db.prepare('DELETE FROM pins WHERE root = ?').run(cid.toString()).changes > 0
    if (await this.legacyPinned(cid)) {
      // a pin of an older version: its per-block records go with it, walking only the blocks
      // that carry one (a lazy pin's later blocks have none; collected ones are not there)
      const { legacy, localBlockstore } = this.components
      const walker = localWalker(localBlockstore, async (c) => await legacy.isPinned(c))
      for await (const _ of legacy.rm(cid, { signal: options.signal, walker } as Parameters<Helia['pins']['rm']>[1])) { /* walk */ }
      removed = true
    }
    if (removed) this.components.onRemove?.()
    return removed
  }

  async * ls (options: { signal?: AbortSignal } = {}): AsyncGenerator<PinRecord> {
    const own = new Set<string>()
    for (const row of this.db.prepare('SELECT root, depth, metadata FROM pins ORDER BY root').all() as Row[]) {
      checkAbort(options.signal)
      own.add(row.root)
      yield fromRow(row)
    }
    for await (const pin of this.components.legacy.ls({ signal: options.signal })) {
      if (!own.has(pin.cid.toString())) yield { cid: pin.cid, depth: pin.depth, metadata: pin.metadata ?? {} }
    }
  }

  private async legacyPinned (cid: CID): Promise<boolean> {
    try {
      await this.components.legacy.get(cid)
      return true
    } catch (err) {
      if ((err as Error).name === 'NotFoundError') return false
      throw err
    }
  }
}

function fromRow (row: Row): PinRecord {
  return { cid: CID.parse(row.root), depth: row.depth ?? Infinity, metadata: JSON.parse(row.metadata) as PinRecord['metadata'] }
}
