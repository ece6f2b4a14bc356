import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { FailedPreconditionError, InvalidArgumentError, InvalidLabelError, SnapshotExistsError, SnapshotNotFoundError } from '../../src/snapshotter/errors.js'
import { parseFilters } from '../../src/snapshotter/filters.js'
import { MetadataStore } from '../../src/snapshotter/metadata.js'

const NS = 'default'
const noUsage = { size: 0, inodes: 0 }

describe('MetadataStore', () => {
  let dir: string
  let db: MetadataStore

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'snapshotter-metadata-'))
    db = new MetadataStore(join(dir, 'metadata.db'))
  })
  afterEach(() => {
    expect(db.check()).toEqual([])
    db.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('creates, commits (same id, commit labels replace) and chains parents nearest first', () => {
    const a = db.create(NS, 'active', 'a', '', { keep: 'no' })
    const c = db.commit(NS, 'c', 'a', { l: '1' }, { size: 10, inodes: 2 })
    expect(c.id).toBe(a.id)
    expect(c).toMatchObject({ name: 'c', kind: 'committed', labels: { l: '1' }, size: 10, inodes: 2 })
    expect(c.created).toBe(c.updated)
    db.create(NS, 'active', 'b', 'c', {})
    const c2 = db.commit(NS, 'c2', 'b', {}, noUsage)
    const v = db.create(NS, 'view', 'v', 'c2', {})
    expect(v.parentIds).toEqual([c2.id, c.id])
    expect(v.parent).toBe('c2')
  })

  it('keeps keys per namespace and ids global', () => {
    const x = db.create('ns1', 'active', 'k', '', {})
    const y = db.create('ns2', 'active', 'k', '', {})
    expect(x.id).not.toBe(y.id)
    expect(() => db.create('ns2', 'view', 'x', 'k', {})).toThrow(InvalidArgumentError) // not committed
    expect(() => db.get('ns3', 'k')).toThrow(SnapshotNotFoundError)
  })

  it('never reuses ids of removed snapshots', () => {
    const a = db.create(NS, 'active', 'a', '', {})
    db.remove(NS, 'a')
    const b = db.create(NS, 'active', 'a', '', {})
    expect(Number(b.id)).toBeGreaterThan(Number(a.id))
  })

  it('Update: no paths or "labels" replace all, "labels.k" sets or deletes one, others are InvalidArgument', () => {
    db.create(NS, 'active', 'a', '', { l1: 'v1', l2: 'v2' })
    const before = db.get(NS, 'a')
    let info = db.update(NS, 'a', { l3: 'v3' }, [])
    expect(info.labels).toEqual({ l3: 'v3' })
    expect(info.created).toBe(before.created)
    expect(info.updated > before.updated).toBe(true)
    info = db.update(NS, 'a', { l1: 'new', l9: 'ignored' }, ['labels.l1', 'labels.l3'])
    expect(info.labels).toEqual({ l1: 'new' }) // l3 absent from the request: deleted
    info = db.update(NS, 'a', { x: 'y' }, ['labels'])
    expect(info.labels).toEqual({ x: 'y' })
    info = db.update(NS, 'a', { 'containerd.io/gc.root': '2024', x: '' }, ['labels.containerd.io/gc.root', 'labels.x'])
    expect(info.labels).toEqual({ 'containerd.io/gc.root': '2024' })
    expect(() => db.update(NS, 'a', {}, ['parent'])).toThrow(/cannot update "parent" field/)
    expect(() => db.update(NS, 'a', {}, ['labels', 'kind'])).toThrow(InvalidArgumentError)
    expect(db.get(NS, 'a').labels).toEqual({ 'containerd.io/gc.root': '2024' }) // failed update changed nothing
    expect(() => db.update(NS, 'nope', {}, [])).toThrow(SnapshotNotFoundError)
  })

  it('enforces containerd\'s label size limit (key + value <= 4096 bytes)', () => {
    const ok = { k: 'v'.repeat(4095) }
    db.create(NS, 'active', 'ok', '', ok)
    expect(db.get(NS, 'ok').labels).toEqual(ok)
    const big = { k: 'v'.repeat(4096) }
    expect(() => db.create(NS, 'active', 'big', '', big)).toThrow(InvalidLabelError)
    expect(() => db.create(NS, 'active', 'big', '', big)).toThrow(/label key and value greater than maximum size \(4096 bytes\), key: k/)
    expect(() => db.commit(NS, 'c', 'ok', { ['é'.repeat(2048)]: 'x' }, noUsage)).toThrow(InvalidLabelError) // bytes, not chars
    expect(() => db.update(NS, 'ok', big, ['labels.k'])).toThrow(InvalidLabelError)
    expect(db.find(NS, 'big')).toBeUndefined()
    expect(db.get(NS, 'ok')).toMatchObject({ kind: 'active', labels: ok })
  })

  it('caps the labels one snapshot holds, also when Updates add them one by one', () => {
    const labels = (n: number, from = 0): Record<string, string> => Object.fromEntries(Array.from({ length: n }, (_, i) => [`l${from + i}`, 'v']))
    expect(() => db.create(NS, 'active', 'many', '', labels(257))).toThrow(/257 labels, more than the maximum of 256/)
    expect(db.find(NS, 'many')).toBeUndefined()
    db.create(NS, 'active', 'many', '', labels(256))
    expect(() => db.update(NS, 'many', { extra: 'v' }, ['labels.extra'])).toThrow(InvalidLabelError)
    expect(Object.keys(db.get(NS, 'many').labels)).toHaveLength(256)
    db.update(NS, 'many', {}, ['labels.l0']) // deleting one makes room for one
    db.update(NS, 'many', { extra: 'v' }, ['labels.extra'])
    expect(db.get(NS, 'many').labels.extra).toBe('v')
  })

  it('rejects bad transitions with the right error and leaves the store unchanged', () => {
    db.create(NS, 'active', 'a', '', {})
    expect(() => db.create(NS, 'view', 'a', '', {})).toThrow(SnapshotExistsError)
    expect(() => db.create(NS, 'active', '', '', {})).toThrow(InvalidArgumentError)
    expect(() => db.create(NS, 'active', 'b', 'missing', {})).toThrow(SnapshotNotFoundError)
    db.commit(NS, 'c', 'a', {}, noUsage)
    expect(() => db.commit(NS, 'c', 'a', {}, noUsage)).toThrow(SnapshotExistsError) // name taken
    expect(() => db.commit(NS, 'c9', 'a', {}, noUsage)).toThrow(SnapshotNotFoundError) // committing twice
    expect(() => db.commit(NS, 'c', 'c', {}, noUsage)).toThrow(SnapshotExistsError) // no cycles: a name is never its own key
    db.create(NS, 'view', 'v', 'c', {})
    expect(() => db.commit(NS, 'cv', 'v', {}, noUsage)).toThrow(FailedPreconditionError)
    expect(() => db.remove(NS, 'c')).toThrow(/cannot remove snapshot "c" with child "v"/)
    expect(() => db.remove(NS, 'c')).toThrow(FailedPreconditionError)
    expect(db.count()).toBe(2)
    db.remove(NS, 'v')
    db.remove(NS, 'c')
    expect(db.count()).toBe(0)
  })

  it('lists with filters and survives reopening', () => {
    db.create(NS, 'active', 'a', '', { 'containerd.io/snapshot.ref': 'sha256:1' })
    db.commit(NS, 'sha256:1', 'a', { 'containerd.io/snapshot.ref': 'sha256:1' }, noUsage)
    db.create(NS, 'view', 'v', 'sha256:1', {})
    db.create('other', 'active', 'a', '', {})
    db.close()
    db = new MetadataStore(join(dir, 'metadata.db'))
    expect(db.list(NS, parseFilters([])).map((s) => s.name)).toEqual(['sha256:1', 'v'])
    expect(db.list(NS, parseFilters(['labels."containerd.io/snapshot.ref"==sha256:1,parent==""'])).map((s) => s.name)).toEqual(['sha256:1'])
    expect(db.list(NS, parseFilters(['kind==view', 'kind==committed'])).map((s) => s.name)).toEqual(['sha256:1', 'v'])
    expect(db.list('other', parseFilters([])).map((s) => s.kind)).toEqual(['active'])
  })
})
