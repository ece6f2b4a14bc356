import { describe, expect, it } from 'vitest'
import { InvalidFilterError } from '../../src/snapshotter/errors.js'
import { parseFilter, parseFilters, unquote } from '../../src/snapshotter/filters.js'
import { adaptInfo } from '../../src/snapshotter/metadata.js'
import { compileRegexp, estimateProgramSize } from '../../src/snapshotter/regexp.js'
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

describe('~= is Go\'s regexp (RE2)', () => {
  const matches = (pattern: string, text: string): boolean => parseFilter(`name~=${JSON.stringify(pattern)}`).match(adaptInfo(snap(text, '', 'active')))
  const refusal = (pattern: string): string => {
    try {
      parseFilter(`name~=${JSON.stringify(pattern)}`)
    } catch (err) {
      expect(err).toBeInstanceOf(InvalidFilterError)
      return (err as Error).message
    }
    throw new Error(`${pattern} was accepted`)
  }

  it('matches in linear time: ^(a+)+$ against 40 a\'s and a "!" answers at once', () => {
    const t0 = performance.now()
    expect(matches('^(a+)+$', 'a'.repeat(40) + '!')).toBe(false)
    expect(matches('^(a+)+$', 'a'.repeat(41))).toBe(true)
    expect(performance.now() - t0).toBeLessThan(500)
  })

  it('has Go\'s semantics: unanchored, . skips newlines, $ is the end of the text, runes not UTF-16 units', () => {
    expect(matches('as', 'base')).toBe(true)
    expect(matches('^a.b$', 'a\nb')).toBe(false)
    expect(matches('(?s)^a.b$', 'a\nb')).toBe(true)
    expect(matches('a$', 'a\n')).toBe(false)
    expect(matches('(?m)a$', 'a\nb')).toBe(true)
    expect(matches('^.$', '😀')).toBe(true)
    expect(matches('(?i)^BASE$', 'base')).toBe(true)
  })

  it.each([
    ['\\x{41}', 'A'], ['(?P<n>b)', 'b'], ['(?<n>b)', 'b'], ['[[:alpha:]]', 'b'], ['\\pL', 'é'], ['\\p{Greek}', 'Ω'],
    ['\\Qa.b\\E', 'a.b'], ['(?U)a+', 'a'], ['a\\z', 'a'], ['\\101', 'A'], ['[\\d]', '7']
  ])('accepts Go syntax %j', (pattern, text) => {
    expect(matches(pattern, text)).toBe(true)
  })

  it.each([
    ['(a)\\1', /invalid escape sequence: `\\1`/],
    ['(?=a)', /invalid or unsupported Perl syntax: `\(\?=`/],
    ['(?!a)', /invalid or unsupported Perl syntax/],
    ['(?<=a)b', /invalid named capture/],
    ['(?<!a)b', /invalid named capture/],
    ['\\u0041', /invalid escape sequence: `\\u`/],
    ['\\Z', /invalid escape sequence/],
    ['a**', /invalid nested repetition operator/],
    ['a{1001}', /expression too large/], // RE2: invalid repeat count; the size check comes first
    ['(', /missing closing \)/]
  ])('refuses %j as Go does, without running it', (pattern, message) => {
    const msg = refusal(pattern)
    expect(msg).toContain('invalid regular expression')
    expect(msg).toMatch(message)
  })

  it('caps what all regexps of one call compile to, before compiling the big ones', () => {
    expect(refusal('[0-9a-f]{200}')).toMatch(/expression too large: 202 RE2 instructions, more than the 128 left for this List call/)
    const digest = 'name~=^sha256:[0-9a-f]{64}$'
    expect(() => parseFilter(digest)).not.toThrow()
    expect(() => parseFilters([digest, digest])).toThrow(/more than the 53 left for this List call/) // one budget for the whole call
    expect(() => parseFilter(`${digest},labels.x~=^sha256:[0-9a-f]{64}$`)).toThrow(/expression too large/)
    expect(() => parseFilters([digest, digest], { maxRegexpInstructions: 150 })).not.toThrow()
    // ~400 000 instructions if compiled: refused from the estimate, without compiling
    const huge = '(?:[abc][abc]?){0,1000}'.repeat(40)
    const t0 = performance.now()
    expect(refusal(huge)).toMatch(/expression too large: about \d+ RE2 instructions/)
    expect(performance.now() - t0).toBeLessThan(50)
  })

  it('estimates program sizes within a small factor (the estimate guards the compiler)', () => {
    let seed = 42
    const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n }
    const atoms = ['a', '.', '[ab]', '[^a]', '\\d', '\\pL', '\\p{Greek}', '\\x{41}', '\\Qa.b\\E', '^', '$', '\\b', '[[:alpha:]]', '[]a]', 'é', '😀', '\\{', '{']
    const ops = ['', '', '*', '+', '?', '*?', '{2}', '{2,5}', '{3,}', '{0,7}', '{0}']
    const gen = (depth: number): string => {
      let s = ''
      for (let i = rnd(4); i >= 0; i--) {
        const a = depth > 0 && rnd(3) === 0
          ? ['(', '(?:', '(?i:', `(?P<g${depth}${i}>`][rnd(4)] + gen(depth - 1) + (rnd(3) === 0 ? '|' + gen(depth - 1) : '') + ')'
          : atoms[rnd(atoms.length)] as string
        s += a + (a === '^' || a === '$' ? '' : ops[rnd(ops.length)] as string)
      }
      return s
    }
    let checked = 0
    for (let n = 0; n < 2000; n++) {
      const p = gen(3)
      let actual: number
      try { actual = compileRegexp(p, 1_000_000).instructions } catch { continue }
      checked++
      expect(estimateProgramSize(p), p).toBeGreaterThanOrEqual(actual / 1.5)
    }
    expect(checked).toBeGreaterThan(1000)
    for (const p of ['^sha256:[0-9a-f]{64}$', 'a[ab]{100}$', '(base|ro)', '(?:ab){3}']) {
      const actual = compileRegexp(p, 1_000_000).instructions
      expect(estimateProgramSize(p), p).toBeGreaterThanOrEqual(actual)
      expect(estimateProgramSize(p), p).toBeLessThanOrEqual(actual * 2)
    }
  })
})
