import { posix } from 'node:path'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { UnsafePathError, assertSafeEntryName, cleanEntryName, climbsOutOfRoot } from '../../src/estargz/index.js'

/** What the names must equal: Go's `strings.TrimPrefix(path.Clean("/"+name), "/")`. */
const goClean = (name: string): string => posix.normalize('/' + name).replace(/^\/+/, '').replace(/\/+$/, '')
/** Whether a `..` climbs above the root, segment by segment (no fast path). */
const climbsRef = (name: string): boolean => {
  let depth = 0
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue
    if (part !== '..') depth++
    else if (depth-- === 0) return true
  }
  return false
}

describe('entry names', () => {
  it('normalises like path.Clean("/"+name) without the leading slash', () => {
    expect(cleanEntryName('./a//b/')).toBe('a/b')
    expect(cleanEntryName('/abs/x')).toBe('abs/x')
    expect(cleanEntryName('.')).toBe('')
    expect(cleanEntryName('./')).toBe('')
    expect(cleanEntryName('a/./b/../c')).toBe('a/c')
  })

  it('cleans any name as path.Clean does, clean names and directory names (the fast paths) included', () => {
    const segment = fc.constantFrom('', '.', '..', 'a', 'b.c', '...', '.d', 'e..', 'usr', 'lib')
    fc.assert(fc.property(fc.array(segment, { maxLength: 8 }), (parts) => {
      const name = parts.join('/')
      expect(cleanEntryName(name)).toBe(goClean(name))
      expect(climbsOutOfRoot(name)).toBe(climbsRef(name))
    }), { numRuns: 5000 })
    for (const name of ['a/b', 'a/b/', 'usr/lib/x.so', 'boot/']) expect(cleanEntryName(name)).toBe(name.replace(/\/$/, ''))
  })

  it('refuses names that escape the root or are absolute', () => {
    for (const bad of ['../x', 'a/../../b', '/abs', './..', 'a\0b']) expect(() => assertSafeEntryName(bad)).toThrow(UnsafePathError)
    for (const good of ['a', './a/b', 'a/../b', 'a/..']) expect(() => assertSafeEntryName(good)).not.toThrow()
    expect(() => assertSafeEntryName('/abs', { allowAbsolute: true })).not.toThrow()
  })
})
