import { createHash, randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { importBytes, openRepo, type OpenRepo } from '../../src/ipfs/index.js'
import { silentLogger } from '../../src/logging.js'
import { MirrorServer } from '../../src/mirror/index.js'
import { MediaType, type Descriptor } from '../../src/oci/index.js'
import { oneLayerImage } from './helpers.js'

const logger = silentLogger()
const digestOf = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`

/**
 * A layout directory whose `blobs/sha256/<hex>` links a layer digest to other bytes of the same
 * size (a forged or corrupt image): the mirror must not hand a client a complete, wrong blob.
 */
describe('mirror: a blob whose content does not match its digest', () => {
  let dir: string
  let repo: OpenRepo
  let mirror: MirrorServer
  let root: string
  let layer: Descriptor
  let real: Uint8Array

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mirror-tamper-'))
    await mkdir(join(dir, 'repo'))
    repo = await openRepo({ logger }, { repo: join(dir, 'repo') })
    const bs = repo.node.localBlockstore
    real = randomBytes(3 << 20)
    const forged = randomBytes(real.length)
    layer = { mediaType: MediaType.OciLayerGzip, digest: digestOf(real), size: real.length }
    root = await oneLayerImage(bs, layer, (await importBytes(bs, forged)).cid)
    mirror = new MirrorServer({ logger, blocks: repo.node.blocks, localBlockstore: bs, index: repo.index }, { address: '127.0.0.1:0' })
    await mirror.start()
  })

  afterAll(async () => {
    await mirror?.stop()
    await repo?.close()
    await new Promise(resolve => setTimeout(resolve, 1500))
    await rm(dir, { recursive: true, force: true })
  })

  it('the answer ends before its last byte: the client sees a transfer error, not a complete blob', async () => {
    const url = `${mirror.url}/v2/ipfs/${root}/blobs/${layer.digest}`
    await expect(fetch(url).then(async r => await r.arrayBuffer())).rejects.toThrow()
    // and again: only a digest that matched is remembered as matching
    await expect(fetch(url).then(async r => await r.arrayBuffer())).rejects.toThrow()
    // the mirror keeps serving
    expect((await fetch(`${mirror.url}/v2/`)).status).toBe(200)
  })
})
