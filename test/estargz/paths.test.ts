import { describe, expect, it } from 'vitest'
import { UnsafePathError, assertSafeEntryName, cleanEntryName } from '../../src/estargz/index.js'

describe('entry names', () => {
  it('normalises like path.Clean("/"+name) without the leading slash', () => {
    expect(cleanEntryName('./a//b/')).toBe('a/b')
    expect(cleanEntryName('/abs/x')).toBe('abs/x')
    expect(cleanEntryName('.')).toBe('')
    expect(cleanEntryName('./')).toBe('')
    expect(cleanEntryName('a/./b/../c')).toBe('a/c')
  })

  it('refuses names that escape the root or are absolute', () => {
    for (const bad of ['../x', 'a/../../b', '/abs', './..', 'a\0b']) expect(() => assertSafeEntryName(bad)).toThrow(UnsafePathError)
    for (const good of ['a', './a/b', 'a/../b', 'a/..']) expect(() => assertSafeEntryName(good)).not.toThrow()
    expect(() => assertSafeEntryName('/abs', { allowAbsolute: true })).not.toThrow()
  })
})
