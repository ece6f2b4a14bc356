import { describe, expect, it } from 'vitest'
import { BadPrefetchListError, expandPrefetchList, globToRegExp, mergedView, parsePrefetchList, type LayerEntry } from '../../src/optimize/index.js'

const M = 'sha256:' + 'a'.repeat(64)

describe('prefetch lists', () => {
  it('globs: * and ? stay in a component, ** spans any number of them, [] classes, \\ escapes', () => {
    const t = (glob: string, path: string): boolean => globToRegExp(glob).test(path)
    expect(t('usr/lib/*.so', 'usr/lib/libc.so')).toBe(true)
    expect(t('usr/lib/*.so', 'usr/lib/x/libc.so')).toBe(false)
    expect(t('usr/lib/**', 'usr/lib/x/y/z.py')).toBe(true)
    expect(t('usr/**/*.py', 'usr/a.py')).toBe(true)
    expect(t('usr/**/*.py', 'usr/lib/python3/json/__init__.py')).toBe(true)
    expect(t('usr/**/*.py', 'usr/lib/a.pyc')).toBe(false)
    expect(t('**/libc.so.?', 'lib/x86_64-linux-gnu/libc.so.6')).toBe(true)
    expect(t('lib[0-9][!a-z]', 'lib64')).toBe(true)
    expect(t('lib[0-9][!a-z]', 'lib6a')).toBe(false)
    expect(t('a\\*b', 'a*b')).toBe(true)
    expect(t('a\\*b', 'axb')).toBe(false)
    expect(t('a.b', 'axb')).toBe(false)
    for (const bad of ['a**', 'a/**b', '[abc', 'a\\']) expect(() => globToRegExp(bad), bad).toThrow()
  })

  it('parses lines (comments, blanks, leading slashes) and rejects bad ones with the line', () => {
    const p = parsePrefetchList('# python\n\n/usr/bin/python3.11\n  usr/lib/**/*.py  \n./etc//hosts\n', 'list')
    expect(p.map(x => [x.line, x.pattern, x.glob != null])).toEqual([[3, 'usr/bin/python3.11', false], [4, 'usr/lib/**/*.py', true], [5, 'etc/hosts', false]])
    for (const [text, msg] of [['a\n../etc/shadow\n', /list line 2: .*climbs out/], ['/\n', /is the root/], ['a[b\n', /line 1: bad glob/]] as const) {
      expect(() => parsePrefetchList(text, 'list')).toThrow(BadPrefetchListError)
      expect(() => parsePrefetchList(text, 'list')).toThrow(msg)
    }
  })

  it('sees the layers as overlayfs merges them: the topmost wins, whiteouts and opaque directories hide what is below', () => {
    const layers: LayerEntry[][] = [
      [{ name: 'etc', type: 'dir' }, { name: 'etc/a.conf', type: 'reg' }, { name: 'etc/b.conf', type: 'reg' }, { name: 'opt', type: 'dir' }, { name: 'opt/old', type: 'reg' }, { name: 'x', type: 'dir' }, { name: 'x/y', type: 'reg' }],
      [{ name: 'etc/a.conf', type: 'reg' }, { name: 'etc/.wh.b.conf', type: 'reg' }, { name: 'opt/.wh..wh..opq', type: 'reg' }, { name: 'opt/new', type: 'reg' }, { name: 'x', type: 'symlink' }],
      [{ name: 'etc/b.conf', type: 'reg' }, { name: 'etc/c.conf', type: 'reg' }, { name: 'etc/c.conf', type: 'symlink' }]
    ]
    const view = mergedView(layers)
    expect(Object.fromEntries([...view].map(([k, v]) => [k, `${v.layerIndex}:${v.type}`]))).toEqual({
      'etc/a.conf': '1:reg', 'etc/b.conf': '2:reg', 'etc/c.conf': '2:symlink', 'opt/new': '1:reg', x: '1:symlink', etc: '0:dir', opt: '0:dir'
    })
  })

  it('expands to record entries in list order, each once, with the layer holding it', () => {
    const layers: LayerEntry[][] = [
      [{ name: 'usr/lib/b.py', type: 'reg' }, { name: 'usr/lib/a.py', type: 'reg' }, { name: 'usr/lib', type: 'dir' }, { name: 'usr/bin/tool', type: 'reg' }],
      [{ name: 'usr/bin/python', type: 'reg' }, { name: 'usr/lib/c.py', type: 'reg' }, { name: 'usr/lib/.wh.b.py', type: 'reg' }]
    ]
    const view = mergedView(layers)
    const { entries, unmatched } = expandPrefetchList(parsePrefetchList('usr/bin/python\nusr/lib/*.py\nusr/bin/python\nnothing/*\n'), view, M)
    expect(entries.map(e => `${e.layerIndex}:${e.path}`)).toEqual(['1:usr/bin/python', '0:usr/lib/a.py', '1:usr/lib/c.py'])
    expect(entries.every(e => e.manifestDigest === M)).toBe(true)
    expect(unmatched.map(u => u.line)).toEqual([4])
    expect(() => expandPrefetchList(parsePrefetchList('usr/lib/b.py\n'), view, M, 'list')).toThrow(/list line 1: "usr\/lib\/b.py" is in no layer/)
    expect(() => expandPrefetchList(parsePrefetchList('usr/lib\n'), view, M, 'list')).toThrow(/is a directory; "usr\/lib\/\*\*"/)
  })
})
