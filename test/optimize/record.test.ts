import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { AccessRecorder, BadRecordError, RecordMismatchError, formatRecord, parseRecord, prioritizedFilesByLayer } from '../../src/optimize/index.js'

const M = 'sha256:' + 'a'.repeat(64)
const OTHER = 'sha256:' + 'b'.repeat(64)
const fixture = join(import.meta.dirname, 'fixtures', 'ctr-remote-record.jsonl')

describe('access records', () => {
  it('parses what ctr-remote writes, keeps its order, and writes the same bytes back', () => {
    const text = readFileSync(fixture, 'utf8')
    const entries = parseRecord(text)
    expect(entries).toHaveLength(20)
    expect(entries[0]).toEqual({ path: 'usr/bin/python3.11', manifestDigest: 'sha256:ed157564ffde0b84d1ad07f210f86f430577be01908d70fa3281c07afc6ccab0', layerIndex: 1 })
    expect(new Set(entries.map(e => e.layerIndex))).toEqual(new Set([0, 1, 2]))
    expect(formatRecord(entries)).toBe(text)
  })

  it('rejects bad lines with the line number and a stable code', () => {
    const good = JSON.stringify({ path: 'a', manifestDigest: M, layerIndex: 0 })
    const bad: Array<[string, RegExp]> = [
      ['{not json', /line 2: not JSON/],
      ['[1]', /line 2: not a JSON object/],
      [JSON.stringify({ manifestDigest: M, layerIndex: 0 }), /"path" must be a string/],
      [JSON.stringify({ path: 'a', manifestDigest: 'sha256:12', layerIndex: 0 }), /"manifestDigest"/],
      [JSON.stringify({ path: 'a', manifestDigest: M, layerIndex: -1 }), /"layerIndex"/],
      [JSON.stringify({ path: 'a', manifestDigest: M, layerIndex: 1.5 }), /"layerIndex"/],
      [JSON.stringify({ path: '../etc/passwd', manifestDigest: M, layerIndex: 0 }), /climbs out/],
      [JSON.stringify({ path: '/', manifestDigest: M, layerIndex: 0 }), /the root/],
      [JSON.stringify({ path: 'a\u0000b', manifestDigest: M, layerIndex: 0 }), /NUL/]
    ]
    for (const [line, message] of bad) {
      let err: unknown
      try { parseRecord(`${good}\n${line}\n`, 'rec') } catch (e) { err = e }
      expect(err, line).toBeInstanceOf(BadRecordError)
      expect((err as BadRecordError).code).toBe('ERR_BAD_RECORD')
      expect((err as Error).message, line).toMatch(message)
    }
    expect(() => parseRecord(`${good}\n${good}\n${good}\n`, 'rec', 2)).toThrow(/more than 2 entries/)
    // leading slashes and ./ are cleaned to the layer's names; blank lines are fine
    expect(parseRecord(`\n${JSON.stringify({ path: '/./usr//bin/x', manifestDigest: M, layerIndex: 3 })}\n\n`)).toEqual([{ path: 'usr/bin/x', manifestDigest: M, layerIndex: 3 }])
  })

  it('gives each layer its paths in first-access order, skips other manifests, and refuses what does not fit the image', () => {
    const image = { manifestDigest: M, layers: [{ digest: 'sha256:l0' }, { digest: 'sha256:l1' }] }
    const e = (path: string, layerIndex: number, manifestDigest = M): { path: string, manifestDigest: string, layerIndex: number } => ({ path, manifestDigest, layerIndex })
    const map = prioritizedFilesByLayer([e('b', 1), e('x', 0, OTHER), e('a', 0), e('b', 1), e('c', 1), e('a', 0)], [image])
    expect([...map]).toEqual([['sha256:l1', ['b', 'c']], ['sha256:l0', ['a']]])
    expect(() => prioritizedFilesByLayer([e('a', 2)], [image])).toThrow(RecordMismatchError)
    expect(() => prioritizedFilesByLayer([e('a', 0, OTHER)], [image])).toThrow(/the record is for manifest sha256:b+, not for the source's sha256:a+/)
    expect(prioritizedFilesByLayer([], [image]).size).toBe(0)
  })

  it('records the first access of each path per layer, in order, within its bound', () => {
    const r = new AccessRecorder(M, 2, 3)
    const l0 = r.hook(0)
    const l1 = r.hook(1)
    l1('usr/bin/python3.11'); l0('lib/libc.so.6'); l1('usr/bin/python3.11'); l0('usr/bin/python3.11'); l1('etc/x'); l1('etc/y')
    expect(r.entries()).toEqual([
      { path: 'usr/bin/python3.11', manifestDigest: M, layerIndex: 1 },
      { path: 'lib/libc.so.6', manifestDigest: M, layerIndex: 0 },
      { path: 'usr/bin/python3.11', manifestDigest: M, layerIndex: 0 }
    ])
    expect(r.droppedEntries).toBe(2)
  })
})
