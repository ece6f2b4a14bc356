import { closeSync, openSync } from 'node:fs'
import Database from 'better-sqlite3'
import { PRIVATE } from '../private-files.js'
import { nowNs } from './clock.js'
import { FailedPreconditionError, InvalidArgumentError, SnapshotExistsError, SnapshotNotFoundError } from './errors.js'
import { DEFAULTS as LIMITS, validateLabels } from './validate.js'
import type { FieldAdaptor, Filter } from './filters.js'
import type { Labels } from '../wire/index.js'

export type Kind = 'view' | 'active' | 'committed'

/** What `Stat`/`List` report about a snapshot (timestamps in ns since the epoch). */
export interface SnapshotInfo {
  name: string
  parent: string
  kind: Kind
  created: bigint
  updated: bigint
  labels: Labels
}

/** A snapshot as the snapshotter needs it to build mounts. */
export interface SnapshotRecord extends SnapshotInfo {
  namespace: string
  /** decimal id, also the name of its directory under `<root>/snapshots/` */
  id: string
  /** ids of the parent chain, nearest parent first */
  parentIds: string[]
  size: number
  inodes: number
}

export interface Usage { size: number, inodes: number }

export const DEFAULTS = {
  /** containerd's `labels.Validate`: len(key) + len(value) must not exceed this many bytes */
  maxLabelSize: LIMITS.maxLabelSize,
  /** labels one snapshot may hold */
  maxLabels: LIMITS.maxLabels
}

const KIND_CODE: Record<Kind, number> = { view: 1, active: 2, committed: 3 }
const CODE_KIND: Record<number, Kind> = { 1: 'view', 2: 'active', 3: 'committed' }

interface Row {
  id: number
  namespace: string
  key: string
  kind: number
  parent_id: number | null
  parent_key: string | null
  created: string
  updated: string
  size: number
  inodes: number
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS snapshots (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  namespace TEXT NOT NULL,
  key TEXT NOT NULL,
  kind INTEGER NOT NULL,
  parent_id INTEGER REFERENCES snapshots(id),
  created TEXT NOT NULL,
  updated TEXT NOT NULL,
  size INTEGER NOT NULL DEFAULT 0,
  inodes INTEGER NOT NULL DEFAULT 0,
  UNIQUE (namespace, key)
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent_id);
CREATE TABLE IF NOT EXISTS labels (
  snapshot_id INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (snapshot_id, key)
);
`

const SELECT = `SELECT s.id, s.namespace, s.key, s.kind, s.parent_id, p.key AS parent_key, s.created, s.updated, s.size, s.inodes
  FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id`

/**
 * Snapshot metadata in SQLite: one row per snapshot (keys unique per namespace, ids global and
 * never reused thanks to AUTOINCREMENT, so a directory name always belongs to one snapshot), labels
 * in their own table. Every mutation is one transaction; callers can run a filesystem step inside
 * it (`create`'s `inside` callback), so the row and the directory appear together or not at all.
 * Semantics follow containerd's `snapshots/storage` (bolt) package.
 */
export class MetadataStore {
  private readonly db: Database.Database
  private readonly limits: typeof DEFAULTS

  constructor (path: string, options: Partial<typeof DEFAULTS> = {}) {
    this.limits = { ...DEFAULTS, ...options }
    // Created owner-only before SQLite opens it: its -wal and -shm files take the database's mode.
    closeSync(openSync(path, 'a', PRIVATE.fileMode))
    this.db = new Database(path)
    this.db.pragma('journal_mode = WAL')
    this.db.pragma('synchronous = FULL')
    this.db.pragma('foreign_keys = ON')
    this.db.exec(SCHEMA)
  }

  close (): void {
    this.db.close()
  }

  /** InvalidLabelError for a label over containerd's size limit, or more labels than a snapshot may hold. */
  validateLabels (labels: Labels): void {
    validateLabels(labels, this.limits)
  }

  /**
   * Creates an active or view snapshot. `inside(id, parentIds)` runs inside the transaction (it
   * renames the prepared directory into place); if it throws, nothing is recorded.
   */
  create (namespace: string, kind: 'active' | 'view', key: string, parent: string, labels: Labels, inside?: (id: string, parentIds: string[]) => void): SnapshotRecord {
    if (key === '') throw new InvalidArgumentError('snapshot key must not be empty: invalid argument')
    this.validateLabels(labels)
    return this.db.transaction(() => {
      let parentRow: Row | undefined
      if (parent !== '') {
        parentRow = this.row(namespace, parent)
        if (parentRow == null) throw new SnapshotNotFoundError(`parent snapshot ${JSON.stringify(parent)} does not exist in namespace ${JSON.stringify(namespace)}: not found`)
        if (parentRow.kind !== KIND_CODE.committed) throw new InvalidArgumentError(`parent ${JSON.stringify(parent)} is not a committed snapshot: invalid argument`)
      }
      if (this.row(namespace, key) != null) throw new SnapshotExistsError(`snapshot ${JSON.stringify(key)} already exists in namespace ${JSON.stringify(namespace)}`)
      const t = nowNs().toString()
      const res = this.db.prepare('INSERT INTO snapshots (namespace, key, kind, parent_id, created, updated) VALUES (?, ?, ?, ?, ?, ?)')
        .run(namespace, key, KIND_CODE[kind], parentRow?.id ?? null, t, t)
      const id = Number(res.lastInsertRowid)
      this.writeLabels(id, labels)
      const parentIds = parentRow != null ? this.chain(parentRow.id) : []
      inside?.(String(id), parentIds)
      return this.record(this.rowById(id))
    })()
  }

  /** The snapshot, or NotFound. */
  get (namespace: string, key: string): SnapshotRecord {
    const row = this.row(namespace, key)
    if (row == null) throw notFound(namespace, key)
    return this.record(row)
  }

  /** Like `get`, but undefined when missing. */
  find (namespace: string, key: string): SnapshotRecord | undefined {
    const row = this.row(namespace, key)
    return row == null ? undefined : this.record(row)
  }

  /**
   * Commits active `key` as `name` (same id and directory). As in containerd, the committed
   * snapshot's labels are the ones given to Commit, not the active snapshot's.
   */
  commit (namespace: string, name: string, key: string, labels: Labels, usage: Usage): SnapshotRecord {
    if (name === '') throw new InvalidArgumentError('committed snapshot name must not be empty: invalid argument')
    this.validateLabels(labels)
    return this.db.transaction(() => {
      if (this.row(namespace, name) != null) throw new SnapshotExistsError(`committed snapshot ${JSON.stringify(name)} already exists in namespace ${JSON.stringify(namespace)}`)
      const row = this.row(namespace, key)
      if (row == null) throw new SnapshotNotFoundError(`active snapshot ${JSON.stringify(key)} does not exist in namespace ${JSON.stringify(namespace)}: not found`)
      if (row.kind !== KIND_CODE.active) throw new FailedPreconditionError(`snapshot ${JSON.stringify(key)} is not active (it is ${CODE_KIND[row.kind] ?? 'unknown'}): failed precondition`)
      const t = nowNs().toString()
      this.db.prepare('UPDATE snapshots SET key = ?, kind = ?, created = ?, updated = ?, size = ?, inodes = ? WHERE id = ?')
        .run(name, KIND_CODE.committed, t, t, usage.size, usage.inodes, row.id)
      this.db.prepare('DELETE FROM labels WHERE snapshot_id = ?').run(row.id)
      this.writeLabels(row.id, labels)
      return this.record(this.rowById(row.id))
    })()
  }

  /** Deletes the snapshot; FailedPrecondition if another snapshot has it as parent. */
  remove (namespace: string, key: string): SnapshotRecord {
    return this.db.transaction(() => {
      const row = this.row(namespace, key)
      if (row == null) throw notFound(namespace, key)
      const child = this.db.prepare('SELECT key, namespace FROM snapshots WHERE parent_id = ? LIMIT 1').get(row.id) as { key: string, namespace: string } | undefined
      if (child != null) throw new FailedPreconditionError(`cannot remove snapshot ${JSON.stringify(key)} with child ${JSON.stringify(child.key)}: failed precondition`)
      const rec = this.record(row)
      this.db.prepare('DELETE FROM labels WHERE snapshot_id = ?').run(row.id)
      this.db.prepare('DELETE FROM snapshots WHERE id = ?').run(row.id)
      return rec
    })()
  }

  /**
   * containerd's `UpdateInfo`: only labels are mutable. No paths replaces all labels; `labels`
   * replaces all; `labels.<k>` sets (or, with an empty/missing value, deletes) one label. Any
   * other path is InvalidArgument.
   */
  update (namespace: string, name: string, labels: Labels, fieldpaths: readonly string[]): SnapshotInfo {
    return this.db.transaction(() => {
      const row = this.row(namespace, name)
      if (row == null) throw notFound(namespace, name)
      let next = this.readLabels(row.id)
      if (fieldpaths.length === 0) {
        next = { ...labels }
      } else {
        for (const path of fieldpaths) {
          if (path.startsWith('labels.')) {
            const k = path.slice('labels.'.length)
            const v = labels[k]
            if (v == null || v === '') Reflect.deleteProperty(next, k)
            else next[k] = v
          } else if (path === 'labels') {
            next = { ...labels }
          } else {
            throw new InvalidArgumentError(`cannot update ${JSON.stringify(path)} field on snapshot ${JSON.stringify(name)}: only labels are mutable: invalid argument`)
          }
        }
      }
      this.validateLabels(next)
      this.db.prepare('UPDATE snapshots SET updated = ? WHERE id = ?').run(nowNs().toString(), row.id)
      this.db.prepare('DELETE FROM labels WHERE snapshot_id = ?').run(row.id)
      this.writeLabels(row.id, next)
      return this.info(this.rowById(row.id))
    })()
  }

  /** Every snapshot of the namespace matching the filter, in id order (a consistent snapshot of the table). */
  list (namespace: string, filter: Filter): SnapshotInfo[] {
    return this.infos(namespace).filter((info) => filter.match(adaptInfo(info)))
  }

  /** Every snapshot of the namespace, in id order, read in one transaction. */
  infos (namespace: string): SnapshotInfo[] {
    return this.db.transaction(() => {
      const rows = this.db.prepare(`${SELECT} WHERE s.namespace = ? ORDER BY s.id`).all(namespace) as Row[]
      return rows.map((r) => this.info(r))
    })()
  }

  /** Ids of every snapshot in every namespace (names of the directories that are owned). */
  ids (): Set<string> {
    const rows = this.db.prepare('SELECT id FROM snapshots').all() as Array<{ id: number }>
    return new Set(rows.map((r) => String(r.id)))
  }

  /** Every snapshot carrying `label` (any namespace), in id order: parents before children. */
  withLabel (label: string): SnapshotRecord[] {
    const rows = this.db.prepare(`${SELECT} WHERE s.id IN (SELECT snapshot_id FROM labels WHERE key = ?) ORDER BY s.id`).all(label) as Row[]
    return rows.map((r) => this.record(r))
  }

  /** Number of snapshots, all namespaces (for tests and metrics). */
  count (): number {
    return (this.db.prepare('SELECT count(*) AS n FROM snapshots').get() as { n: number }).n
  }

  /** SQLite's own consistency check plus ours (every parent exists); [] when all is well. */
  check (): string[] {
    const problems: string[] = []
    const ic = this.db.pragma('integrity_check') as Array<{ integrity_check: string }>
    for (const r of ic) if (r.integrity_check !== 'ok') problems.push(r.integrity_check)
    const fk = this.db.pragma('foreign_key_check') as unknown[]
    if (fk.length > 0) problems.push(`${fk.length} foreign key violations`)
    return problems
  }

  private row (namespace: string, key: string): Row | undefined {
    return this.db.prepare(`${SELECT} WHERE s.namespace = ? AND s.key = ?`).get(namespace, key) as Row | undefined
  }

  private rowById (id: number): Row {
    return this.db.prepare(`${SELECT} WHERE s.id = ?`).get(id) as Row
  }

  private chain (id: number): string[] {
    const out: string[] = []
    let cur: number | null = id
    while (cur != null) {
      out.push(String(cur))
      const r = this.db.prepare('SELECT parent_id FROM snapshots WHERE id = ?').get(cur) as { parent_id: number | null } | undefined
      cur = r?.parent_id ?? null
    }
    return out
  }

  private readLabels (id: number): Labels {
    const rows = this.db.prepare('SELECT key, value FROM labels WHERE snapshot_id = ? ORDER BY key').all(id) as Array<{ key: string, value: string }>
    const out: Labels = {}
    for (const r of rows) out[r.key] = r.value
    return out
  }

  /** containerd drops labels with empty values when it writes them. */
  private writeLabels (id: number, labels: Labels): void {
    const ins = this.db.prepare('INSERT INTO labels (snapshot_id, key, value) VALUES (?, ?, ?)')
    for (const [k, v] of Object.entries(labels)) {
      if (v !== '') ins.run(id, k, v)
    }
  }

  private info (r: Row): SnapshotInfo {
    return {
      name: r.key,
      parent: r.parent_key ?? '',
      kind: CODE_KIND[r.kind] ?? 'active',
      created: BigInt(r.created),
      updated: BigInt(r.updated),
      labels: this.readLabels(r.id)
    }
  }

  private record (r: Row): SnapshotRecord {
    return {
      ...this.info(r),
      namespace: r.namespace,
      id: String(r.id),
      parentIds: r.parent_id != null ? this.chain(r.parent_id) : [],
      size: r.size,
      inodes: r.inodes
    }
  }
}

function notFound (namespace: string, key: string): SnapshotNotFoundError {
  return new SnapshotNotFoundError(`snapshot ${JSON.stringify(key)} does not exist in namespace ${JSON.stringify(namespace)}: not found`)
}

/** The fields containerd's snapshot filters can address (`snapshots/storage.adaptSnapshot`). */
export function adaptInfo (info: SnapshotInfo): FieldAdaptor {
  return (fieldpath) => {
    switch (fieldpath[0]) {
      case 'kind': return { value: info.kind, present: true }
      case 'name': return { value: info.name, present: true }
      case 'parent': return { value: info.parent, present: true }
      case 'labels': {
        const v = info.labels[fieldpath.slice(1).join('.')]
        return v == null ? { value: '', present: false } : { value: v, present: true }
      }
      default: return { value: '', present: false }
    }
  }
}
