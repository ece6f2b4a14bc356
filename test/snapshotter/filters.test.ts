import { describe, expect, it } from 'vitest'
import { InvalidFilterError } from '../../src/snapshotter/errors.js'
import { parseFilter, parseFilters, unquote } from '../../src/snapshotter/filters.js'
import { adaptInfo } from '../../src/snapshotter/metadata.js'
import type { SnapshotInfo } from '../../src/snapshotter/metadata.js'

const snap = (name: string, parent: string, kind: SnapshotInfo['kind'], labels: Record<string, string> = {}): SnapshotInfo =>
  ({ name, parent, kind, created: 0n, updated: 0n, labels })

const all = [
  snap('base', '', 'committed', { 'containerd.io/snapshot.ref': 'sha256:aaa', l: '1' }),
  snap('layer2', 'base', 'committed', { 'containerd.io/snapshot.ref': 'sha256:bbb', 'containerd.io/snapshot/remote': 'remote snapshot' }),
  snap('work', 'layer2', 'active', { l: '2', 'a.b': 'dotted' }),
  snap('ro', 'base', 'view'),
  snap('my key, with spaces', '', 'active', { q: 'va"l' })
]

const names = (...filters: string[]): string[] => {
  const f = parseFilters(filters)
  return all.filter((s) => f.match(adaptInfo(s))).map((s) => s.name)
}

describe('containerd filter syntax', () => {
  it('matches fields with ==, != and presence', () => {
    expect(names('name==base')).toEqual(['base'])
    expect(names('kind==active')).toEqual(['work', 'my key, with spaces'])
    expect(names('kind!=committed')).toEqual(['work', 'ro', 'my key, with spaces'])
    expect(names('labels.l')).toEqual(['base', 'work'])
    expect(names('labels."containerd.io/snapshot/remote"')).toEqual(['layer2'])
    // an absent label compares as "": != matches snapshots without it
    expect(names('labels.l!=1')).toEqual(['layer2', 'work', 'ro', 'my key, with spaces'])
  })

  it('commas AND selectors, several filters OR', () => {
    expect(names('kind==committed,labels.l==1')).toEqual(['base'])
    expect(names('name==base', 'name==ro')).toEqual(['base', 'ro'])
    expect(names()).toEqual(all.map((s) => s.name))
    expect(names('')).toEqual(all.map((s) => s.name))
  })

  it('finds a remote snapshot with containerd\'s own Walk filter (quoted parent)', () => {
    expect(names('labels."containerd.io/snapshot.ref"==sha256:bbb,parent=="base"')).toEqual(['layer2'])
    expect(names('labels."containerd.io/snapshot.ref"==sha256:aaa,parent==""')).toEqual(['base'])
    expect(names('labels."containerd.io/snapshot.ref"==sha256:bbb,parent==""')).toEqual([])
  })

  it('supports regular expressions with ~= and alternative quotes', () => {
    expect(names('name~=^lay')).toEqual(['layer2'])
    expect(names('name~=/^(base|ro)$/')).toEqual(['base', 'ro'])
    expect(names('name~=|wo.k|')).toEqual(['work'])
  })

  it('joins dotted label paths and unquotes values', () => {
    expect(names('labels.a.b==dotted')).toEqual(['work'])
    expect(names('labels."a.b"==dotted')).toEqual(['work'])
    expect(names('name=="my key, with spaces"')).toEqual(['my key, with spaces'])
    expect(names('labels.q=="va\\"l"')).toEqual(['my key, with spaces'])
    expect(unquote('"\\x41\\u00e9\\101\\n"')).toBe('AéA\n')
  })

  it.each([
    ['name==', /expected a value/],
    ['name=base', /unsupported operator "="/],
    ['name===base', /unsupported operator/],
    ['==base', /expected field or quoted/],
    ['name==a,', /expected a field/],
    ['name==a b', /unexpected input/],
    ['labels."unterminated', /quoted literal not terminated/],
    ['name==/x/', /invalid quote encountered/],
    ['name~=/(/', /invalid regular expression/],
    ['labels."bad\\q"', /unquoting failed/],
    ['name==x\0', /./]
  ])('rejects %j with a clear InvalidArgument', (input, message) => {
    const err = (() => { try { parseFilter(input); return undefined } catch (e) { return e } })()
    expect(err).toBeInstanceOf(InvalidFilterError)
    expect((err as InvalidFilterError).code).toBe('ERR_INVALID_FILTER')
    expect((err as Error).message).toMatch(message)
    expect((err as Error).message).toContain('invalid filter [')
  })
})
