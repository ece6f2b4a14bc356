/**
 * Our optimizer against the reference's (`ctr-remote image optimize`), on the reference stack's
 * own image and the record ctr-remote wrote for it. Run by `npm run test:reference`, which
 * stands the reference stack up first; here a missing stack is a failure, never a skip.
 */
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { formatRecord, parseRecord } from '../../src/optimize/index.js'
import { refstackDir } from '../../scripts/fixtures/tools.js'
import { cli, expectPrioritized, layerToc, layoutLayers, mountsUnder, pathsOf, verifyLayout } from '../optimize/helpers.js'

const image = join(refstackDir, 'image', 'oci')
const record = join(refstackDir, 'optimize-record.json')

describe('ipfs-estargz optimize against ctr-remote image optimize (reference stack)', () => {
  let dir: string
  let tmp: string

  beforeAll(async () => {
    for (const p of [image, record]) {
      if (!existsSync(p)) throw new Error(`${p} is missing: the reference stack is not set up in ${refstackDir} (npm run test:reference sets it up)`)
    }
    dir = await mkdtemp(join(tmpdir(), 'optimize-ref-'))
    tmp = join(dir, 'tmp')
    await mkdir(tmp)
  })
  afterAll(async () => {
    if (dir != null) await rm(dir, { recursive: true, force: true })
  })

  it('parses the whole record ctr-remote wrote and writes the same bytes back', async () => {
    const text = await readFile(record, 'utf8')
    expect(parseRecord(text).length).toBeGreaterThan(0)
    expect(formatRecord(parseRecord(text))).toBe(text)
  })

  it('replays ctr-remote\'s own record: every layer gets exactly the files it lists, in its order', async () => {
    const out = join(dir, 'ref-out')
    const r = await cli(['optimize', `oci:${image}`, '--no-ipfs', '--output', `oci:${out}`, '--record-in', record, '--record-out', join(dir, 'ref-rec'), '--json', '--level', '1'], { env: { TMPDIR: tmp } })
    expect(r.code, r.stderr).toBe(0)
    const entries = parseRecord(await readFile(record, 'utf8'))
    const tocs = await Promise.all(layoutLayers(out).map(layerToc))
    expect(tocs).toHaveLength(3)
    for (let i = 0; i < tocs.length; i++) expectPrioritized(tocs[i], pathsOf(entries, i))
    expect(tocs[2].prioritized).toEqual(['app/app.py'])
    // what we write back is what ctr-remote wrote, byte for byte
    expect(await readFile(join(dir, 'ref-rec'), 'utf8')).toBe(await readFile(record, 'utf8'))
    verifyLayout(out)
  })

  it('running the image\'s workload records what ctr-remote\'s fanotify recorded: the same first accesses, in the same order', async () => {
    const r = await cli(['optimize', `oci:${image}`, '--no-ipfs', '--output', `oci:${join(dir, 'ref-run')}`, '--record-out', join(dir, 'ref-run-rec'), '--level', '1'], { env: { TMPDIR: tmp } })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toContain('"ok": true') // the image's own Cmd: python3 /app/app.py in /app
    const ours = parseRecord(await readFile(join(dir, 'ref-run-rec'), 'utf8'))
    // ctr-remote logs every open; a record keeps the first of each path per layer
    const seen = new Set<string>()
    const theirs = parseRecord(await readFile(record, 'utf8')).filter(e => {
      const k = `${e.layerIndex}:${e.path}`
      if (seen.has(k)) return false
      seen.add(k)
      return true
    })
    expect(ours).toEqual(theirs)
    expect(mountsUnder(tmp)).toEqual([])
  })
})
