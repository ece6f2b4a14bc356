import { describe, expect, it } from 'vitest'
import { MalformedTocError, encodeToc, formatModtime, parseToc } from '../../src/estargz/index.js'

describe('TOC', () => {
  it('encodes fields in the Go struct order, omitting zero values, with sorted base64 xattrs', () => {
    const text = Buffer.from(encodeToc({
      version: 1,
      entries: [
        { chunkDigest: 'sha256:' + 'b'.repeat(64), name: 'f', type: 'reg', size: 3, mode: 420, uid: 0, gid: 0, offset: 10, xattrs: { 'user.z': 'eg==', 'user.a': 'YQ==' }, digest: 'sha256:' + 'a'.repeat(64), chunkOffset: 0, userName: '' },
        { name: 'd/', type: 'dir', mode: 493, modtime: '2020-01-02T03:04:05Z', xattrs: {} }
      ]
    })).toString()
    expect(text).toBe([
      '{', '\t"version": 1,', '\t"entries": [', '\t\t{',
      '\t\t\t"name": "f",', '\t\t\t"type": "reg",', '\t\t\t"size": 3,', '\t\t\t"mode": 420,', '\t\t\t"offset": 10,',
      '\t\t\t"xattrs": {', '\t\t\t\t"user.a": "YQ==",', '\t\t\t\t"user.z": "eg=="', '\t\t\t},',
      `\t\t\t"digest": "sha256:${'a'.repeat(64)}",`, `\t\t\t"chunkDigest": "sha256:${'b'.repeat(64)}"`,
      '\t\t},', '\t\t{', '\t\t\t"name": "d/",', '\t\t\t"type": "dir",', '\t\t\t"modtime": "2020-01-02T03:04:05Z",', '\t\t\t"mode": 493', '\t\t}', '\t]', '}'
    ].join('\n'))
  })

  it('formats modtime as Go does: UTC, rounded to the second, omitted at the epoch', () => {
    expect(formatModtime(1700000000)).toBe('2023-11-14T22:13:20Z')
    expect(formatModtime(1700000000.5)).toBe('2023-11-14T22:13:21Z')
    expect(formatModtime(1700000000.49)).toBe('2023-11-14T22:13:20Z')
    expect(formatModtime(0)).toBeUndefined()
    expect(formatModtime(0.7)).toBeUndefined()
  })

  it('parses TOCs and ignores unknown keys such as NumLink', () => {
    const toc = parseToc(Buffer.from(JSON.stringify({ version: 1, entries: [{ name: 'a', type: 'reg', size: 1, NumLink: 0, digest: 'sha256:' + 'c'.repeat(64) }] })))
    expect(toc.entries).toEqual([{ name: 'a', type: 'reg', size: 1, digest: 'sha256:' + 'c'.repeat(64) }])
    expect(parseToc(Buffer.from('{"version":1}')).entries).toEqual([])
  })

  it('rejects malformed TOCs with MalformedTocError naming the problem', () => {
    const bad: Array<[unknown, RegExp]> = [
      [{ version: 2, entries: [] }, /version/],
      [{ version: 1, entries: {} }, /not an array/],
      [{ version: 1, entries: [{ type: 'reg' }] }, /no name/],
      [{ version: 1, entries: [{ name: 'a', type: 'socket' }] }, /unknown type/],
      [{ version: 1, entries: [{ name: 'a', type: 'reg', size: -1 }] }, /size/],
      [{ version: 1, entries: [{ name: 'a', type: 'reg', offset: 1.5 }] }, /offset/],
      [{ version: 1, entries: [{ name: 'a', type: 'reg', digest: 'md5:x' }] }, /digest/],
      [{ version: 1, entries: [{ name: 'a', type: 'reg', xattrs: { k: '***' } }] }, /base64/]
    ]
    for (const [doc, re] of bad) {
      expect(() => parseToc(Buffer.from(JSON.stringify(doc)))).toThrow(re)
      expect(() => parseToc(Buffer.from(JSON.stringify(doc)))).toThrow(MalformedTocError)
    }
    expect(() => parseToc(Buffer.from('{nope'))).toThrow(/not JSON/)
  })
})
