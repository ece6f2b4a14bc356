import { gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { NotFoundError, pullImage } from '../../src/containerd/index.js'
import { DiffIdMismatchError, MediaType, hostPlatform, type Descriptor, type ImageReader } from '../../src/oci/index.js'
import { containerdNeeds, startContainerd, type PrivateContainerd } from '../../scripts/fixtures/containerd.js'
import { needs } from '../helpers/env.js'
import { makeTar } from '../../scripts/fixtures/tar.js'
import { sha256 } from '../../scripts/fixtures/digest.js'

/** A one-layer image held in memory: its config lists `diffId` for the layer, right or not. */
function oneLayerImage (layer: Buffer, diffId: string): ImageReader {
  const blobs = new Map<string, Uint8Array>()
  const put = (mediaType: string, bytes: Uint8Array): Descriptor => {
    blobs.set(sha256(bytes), bytes)
    return { mediaType, digest: sha256(bytes), size: bytes.length }
  }
  const { os, architecture } = hostPlatform()
  const config = put(MediaType.OciConfig, Buffer.from(JSON.stringify({ os, architecture, rootfs: { type: 'layers', diff_ids: [diffId] } })))
  const layerDesc = put(MediaType.OciLayerGzip, layer)
  const manifest = put(MediaType.OciManifest, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config, layers: [layerDesc] })))
  const bytes = (d: Descriptor): Uint8Array => {
    const b = blobs.get(d.digest)
    if (b == null) throw new Error(`no blob ${d.digest}`)
    return b
  }
  return {
    name: 'memory:one-layer',
    root: async () => manifest,
    fetch: async (d) => (async function * () { yield bytes(d) })(),
    fetchBytes: async (d) => bytes(d),
    close: async () => {}
  }
}

describe.skipIf(needs(containerdNeeds))('pullImage: containerd applies a layer whose diff is not the config\'s diffID', () => {
  let ctrd: PrivateContainerd

  beforeAll(async () => { ctrd = await startContainerd() })
  afterAll(async () => { await ctrd?.stop() })

  it('fails with the DiffIdMismatchError a push gives (ERR_DIFFID_MISMATCH), and no image is recorded', async () => {
    const tar = makeTar([{ name: 'hello.txt', data: 'hello\n' }])
    const wrong = sha256(makeTar([{ name: 'hello.txt', data: 'jello\n' }]))
    const client = ctrd.client.withNamespace('diffid')
    const err = await pullImage({ client, source: oneLayerImage(gzipSync(tar), wrong), name: 'diffid', snapshotter: 'overlayfs', lazy: false }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(DiffIdMismatchError)
    expect(err).toMatchObject({ code: 'ERR_DIFFID_MISMATCH', expected: wrong, actual: sha256(tar) })
    expect((err as Error).message).toContain('containerd\'s applied diff')
    await expect(client.images.get('diffid')).rejects.toBeInstanceOf(NotFoundError)
  })

  it('and with the right diffID the same image pulls', async () => {
    const tar = makeTar([{ name: 'hello.txt', data: 'hello\n' }])
    const client = ctrd.client.withNamespace('diffid-ok')
    const res = await pullImage({ client, source: oneLayerImage(gzipSync(tar), sha256(tar)), name: 'diffid-ok', snapshotter: 'overlayfs', lazy: false })
    expect(res.layers.map(l => l.diffId)).toEqual([sha256(tar)])
    expect((await client.images.get('diffid-ok')).name).toBe('diffid-ok')
  })
})
