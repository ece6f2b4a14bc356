import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openRepo, type PackBlockstore, type OpenRepo } from '../../src/ipfs/index.js'
import { silentLogger } from '../../src/logging.js'
import { MirrorServer } from '../../src/mirror/index.js'
import { corruptPackedBlock } from '../../scripts/fixtures/repo-blocks.js'
import { download, rangesOf, smallLeafImage, type SmallLeafImage } from './helpers.js'

const logger = silentLogger()

/**
 * The default store hashes a block on its first read in a run; a blob the mirror has read whole
 * (every leaf verified, the digest matched) is then sent as runs of its pack files.
 */
describe('mirror: a blob read whole once is sent from its extents in the pack files', () => {
  let dir: string
  let img: SmallLeafImage
  let repo: OpenRepo
  let mirror: MirrorServer
  /** readVerified answers 0 (a span gone: its pack compacted away) after this many more calls. */
  let failAfter = Infinity
  const calls = { readVerified: 0 }

  const start = async (): Promise<void> => {
    const local = repo.node.localBlockstore as PackBlockstore
    mirror = new MirrorServer({
      logger,
      blocks: repo.node.blocks,
      localBlockstore: {
        has: async c => await local.has(c),
        get: (c, o) => local.get(c, o),
        readMany: async (c, o) => await local.readMany(c, o),
        verifiedSpans: cids => local.verifiedSpans(cids),
        readVerified: async (span, buf) => {
          calls.readVerified++
          if (failAfter-- <= 0) return 0
          return await local.readVerified(span, buf)
        }
      },
      index: repo.index
    }, { address: '127.0.0.1:0', blockTimeoutMs: 1_000 }) // a dropped leaf is not searched for long
    await mirror.start()
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mirror-extents-'))
    img = await smallLeafImage(dir)
    repo = img.repo
    await start()
  }, 120_000)

  afterAll(async () => {
    await mirror?.stop()
    await repo?.close()
    await new Promise(resolve => setTimeout(resolve, 1500))
    await rm(dir, { recursive: true, force: true })
  })

  const url = (): string => `${mirror.url}/v2/ipfs/${img.root}/blobs/${img.layer.digest}`

  /** Whole downloads until one is sent from extents (they are looked up in the background after a whole read). */
  async function wholeFromExtents (): Promise<Buffer> {
    for (let i = 0; i < 50; i++) {
      const before = mirror.stats().extentAnswers
      const r = await download(url())
      expect(r.status).toBe(200)
      expect(r.complete).toBe(true)
      if (mirror.stats().extentAnswers > before) return r.body
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    throw new Error('no answer came from extents')
  }

  it('the first whole read goes block by block; later ones from extents, a large read per piece, equal to the source', async () => {
    const first = await download(url())
    expect(first.complete).toBe(true)
    expect(Buffer.compare(first.body, img.src)).toBe(0)
    expect(mirror.stats().extentAnswers).toBe(0)
    const reads = calls.readVerified
    const body = await wholeFromExtents()
    expect(Buffer.compare(body, img.src)).toBe(0)
    // pieces of ≤ 1 MiB, not a read per leaf (2500 leaves)
    const perAnswer = calls.readVerified - reads
    expect(perAnswer).toBeLessThanOrEqual(Math.ceil(img.src.length / (1 << 20)) + 8)
    expect(mirror.stats().extentMisses).toBe(0)
  })

  it('answers ranges from extents exactly: leaf and interior-node boundaries, the first and last byte, random ones', async () => {
    const ranges = rangesOf(img)
    const before = mirror.stats().extentAnswers
    for (const [a, b] of ranges) {
      const r = await download(url(), { range: `bytes=${a}-${b}` })
      expect(r.status, `${a}-${b}`).toBe(206)
      expect(Buffer.compare(r.body, img.src.subarray(a, b + 1)), `${a}-${b}`).toBe(0)
    }
    expect(mirror.stats().extentAnswers - before).toBe(ranges.length)
  })

  it('a span gone mid-answer (its pack compacted away): the rest goes block by block, the answer is whole and exact, the extents are learnt again', async () => {
    failAfter = 3
    const r = await download(url())
    failAfter = Infinity
    expect(r.complete).toBe(true)
    expect(Buffer.compare(r.body, img.src)).toBe(0)
    expect(mirror.stats().extentMisses).toBe(1)
    const range = await download(url(), { range: 'bytes=5000000-5999999' })
    expect(Buffer.compare(range.body, img.src.subarray(5_000_000, 6_000_000))).toBe(0)
    expect(Buffer.compare(await wholeFromExtents(), img.src)).toBe(0)
  })

  it('after a restart, a leaf changed at rest is caught at its first read: the answer stops before it', async () => {
    await mirror.stop()
    await repo.close()
    const bad = img.leaves[1500]
    await corruptPackedBlock(join(dir, 'repo'), bad.cid)
    repo = await openRepo({ logger }, { repo: join(dir, 'repo') })
    await start()
    const whole = await download(url())
    expect(whole.complete).toBe(false)
    expect(whole.body.length).toBeLessThanOrEqual(bad.start)
    expect(Buffer.compare(whole.body, img.src.subarray(0, whole.body.length))).toBe(0)
    // never learnt as extents: the next whole read is not sent from them either
    await new Promise(resolve => setTimeout(resolve, 300))
    const again = await download(url())
    expect(again.complete).toBe(false)
    expect(mirror.stats().extentAnswers).toBe(0)
  })
})
