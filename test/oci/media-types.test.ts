import { describe, expect, it } from 'vitest'
import {
  isConfigMediaType, isForeignLayer, isIndexMediaType, isLayerMediaType, isManifestMediaType,
  layerCompression, MANIFEST_ACCEPT, MediaType
} from '../../src/oci/media-types.js'

describe('media types', () => {
  it('classifies OCI and Docker types', () => {
    expect(isIndexMediaType(MediaType.OciIndex)).toBe(true)
    expect(isIndexMediaType(MediaType.DockerManifestList)).toBe(true)
    expect(isManifestMediaType(MediaType.DockerManifest)).toBe(true)
    expect(isManifestMediaType(MediaType.OciIndex)).toBe(false)
    expect(isConfigMediaType(MediaType.DockerConfig)).toBe(true)
    expect(isLayerMediaType('application/vnd.oci.image.layer.v1.tar+zstd')).toBe(true)
    expect(isLayerMediaType('application/vnd.example.thing')).toBe(false)
  })

  it('knows layer compression and foreign layers', () => {
    expect(layerCompression(MediaType.DockerLayerGzip)).toBe('gzip')
    expect(layerCompression(MediaType.DockerLayer)).toBe('none')
    expect(layerCompression(MediaType.OciLayerZstd)).toBe('zstd')
    expect(layerCompression('text/plain')).toBeUndefined()
    expect(isForeignLayer(MediaType.DockerForeignLayer)).toBe(true)
    expect(isForeignLayer(MediaType.OciLayerNonDistributableGzip)).toBe(true)
    expect(isForeignLayer(MediaType.OciLayerGzip)).toBe(false)
  })

  it('accepts every manifest type on registry requests', () => {
    for (const t of [MediaType.OciIndex, MediaType.OciManifest, MediaType.DockerManifestList, MediaType.DockerManifest]) expect(MANIFEST_ACCEPT).toContain(t)
  })
})
