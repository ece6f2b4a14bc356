import { describe, expect, it } from 'vitest'
import { cidOfDescriptor } from '../../src/ipfs/index.js'
import { digestOf, IPFS_CID_ANNOTATION, MediaType, registryCopy, type Descriptor, type Index, type Manifest, type PushImage } from '../../src/oci/index.js'

const CID_A = 'bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy'
const CID_B = 'bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4'

function desc (mediaType: string, bytes: Uint8Array, extra: Partial<Descriptor> = {}): Descriptor {
  return { mediaType, digest: digestOf(bytes), size: bytes.length, ...extra }
}

describe('registryCopy', () => {
  const layer = desc(MediaType.OciLayerGzip, Buffer.from('layer'), { urls: [`ipfs://${CID_A}`], annotations: { 'containerd.io/snapshot/stargz/toc.digest': 'sha256:aa' } })
  const config = desc(MediaType.OciConfig, Buffer.from('{}'), { urls: [`ipfs://${CID_B}`] })
  const manifest: Manifest = { schemaVersion: 2, mediaType: MediaType.OciManifest, config, layers: [layer] }
  const manifestBytes = Buffer.from(JSON.stringify(manifest))
  const manifestDesc = desc(MediaType.OciManifest, manifestBytes, { urls: [`ipfs://${CID_B}`], platform: { os: 'linux', architecture: 'amd64' } })
  const index: Index = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [manifestDesc] }
  const indexBytes = Buffer.from(JSON.stringify(index))
  const image: PushImage = {
    blobs: [],
    manifests: [{ descriptor: manifestDesc, bytes: manifestBytes }, { descriptor: desc(MediaType.OciIndex, indexBytes), bytes: indexBytes }]
  }

  it('moves ipfs:// urls into the CID annotation, renames the rewritten manifest in the index, keeps the rest', () => {
    const copy = registryCopy(image)
    const [m, i] = copy.manifests
    const mj = JSON.parse(Buffer.from(m.bytes).toString()) as Manifest
    expect(mj.layers[0].urls).toBeUndefined()
    expect(mj.layers[0].annotations).toEqual({ 'containerd.io/snapshot/stargz/toc.digest': 'sha256:aa', [IPFS_CID_ANNOTATION]: CID_A })
    expect(mj.layers[0].digest).toBe(layer.digest)
    expect(mj.config.annotations?.[IPFS_CID_ANNOTATION]).toBe(CID_B)
    expect(m.descriptor.digest).toBe(digestOf(m.bytes))
    expect(m.descriptor.digest).not.toBe(manifestDesc.digest)
    const ij = JSON.parse(Buffer.from(i.bytes).toString()) as Index
    expect(ij.manifests[0].digest).toBe(m.descriptor.digest)
    expect(ij.manifests[0].size).toBe(m.bytes.length)
    expect(ij.manifests[0].platform).toEqual({ os: 'linux', architecture: 'amd64' })
    expect(ij.manifests[0].urls).toBeUndefined()
    expect(i.descriptor.digest).toBe(digestOf(i.bytes))
    expect(JSON.stringify(copy)).not.toContain('ipfs://')
    // the CID is still found from the registry copy's descriptors
    expect(cidOfDescriptor(mj.layers[0])?.toString()).toBe(CID_A)
  })

  it('leaves an image without ipfs:// urls byte for byte as it is', () => {
    const plain = desc(MediaType.OciLayerGzip, Buffer.from('x'), { urls: ['https://example.com/x'] })
    const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: desc(MediaType.OciConfig, Buffer.from('{}')), layers: [plain] }))
    const img: PushImage = { blobs: [], manifests: [{ descriptor: desc(MediaType.OciManifest, bytes), bytes }] }
    const copy = registryCopy(img)
    expect(copy.manifests[0]).toBe(img.manifests[0])
  })
})
