import { createHash } from 'node:crypto'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { CID } from 'multiformats/cid'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { collectBlock, openRepo, type OpenRepo } from '../../src/ipfs/index.js'
import { silentLogger } from '../../src/logging.js'
import { MirrorServer } from '../../src/mirror/index.js'
import { openOciLayout, resolveImages } from '../../src/oci/index.js'
import { mirrorFixture, type MirrorFixture } from './helpers.js'

const logger = silentLogger()

/**
 * A mirror that holds only the root block of an image serves the whole image through the
 * registry API, fetching the rest from its peer (a real libp2p connection on loopback), each
 * block checked; its gateway stays local-only.
 */
describe('mirror with a partial image', () => {
  let a: MirrorFixture
  let b: OpenRepo
  let mirror: MirrorServer

  beforeAll(async () => {
    a = await mirrorFixture({ listen: ['/ip4/127.0.0.1/tcp/0'] })
    await mkdir(join(a.dir, 'b'), { recursive: true })
    b = await openRepo({ logger }, { repo: join(a.dir, 'b'), inboundConnectionsPerSec: 1000 })
    const root = CID.parse(a.root)
    await b.node.localBlockstore.put(root, await collectBlock(a.repo.node.localBlockstore.get(root)))
    await b.node.dial(a.repo.node.multiaddrs()[0])
    mirror = new MirrorServer({ logger, blocks: b.node.blocks, localBlockstore: b.node.localBlockstore, index: b.index }, { address: '127.0.0.1:0' })
    await mirror.start()
  }, 120_000)

  afterAll(async () => {
    await mirror?.stop()
    await b?.close().catch(() => {})
    await a?.cleanup()
  })

  it('serves every layer of the image, fetched from the peer, equal to the source', async () => {
    const layout = await openOciLayout(a.layout)
    try {
      const r = await resolveImages(layout)
      for (const l of r.images.flatMap(i => i.layers)) {
        const res = await fetch(`${mirror.url}/v2/ipfs/${a.root}/blobs/${l.digest}`)
        expect(res.status).toBe(200)
        const got = Buffer.from(await res.arrayBuffer())
        expect(`sha256:${createHash('sha256').update(got).digest('hex')}`).toBe(l.digest)
      }
    } finally {
      await layout.close()
    }
    const s = b.node.fetchStats()
    expect(s.exchangeBlocks + s.bitswapBlocks).toBeGreaterThan(0)
  }, 120_000)

  it('its gateway answers 404 for a block only the peer has: it never fetches for a client', async () => {
    // a block of A's image that B has not fetched: a fresh import on A
    const { importBytes } = await import('../../src/ipfs/index.js')
    const { cid } = await importBytes(a.repo.node.localBlockstore, Buffer.from('only on A'))
    const before = b.node.fetchStats()
    const res = await fetch(`${mirror.url}/ipfs/${cid.toString()}?format=raw`)
    expect(res.status).toBe(404)
    await res.arrayBuffer()
    expect(await b.node.localBlockstore.has(cid)).toBe(false)
    const after = b.node.fetchStats()
    expect(after.exchangeBlocks + after.bitswapBlocks + after.failures).toBe(before.exchangeBlocks + before.bitswapBlocks + before.failures)
  })
})
