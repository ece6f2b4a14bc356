import { describe, expect, it } from 'vitest'
import {
  dockerToOciMediaType, isConfigMediaType, isForeignLayer, isIndexMediaType, isLayerMediaType, isManifestMediaType,
  layerCompression, MANIFEST_ACCEPT, MediaType, ociLayerMediaType
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
    expect(ociLayerMediaType('gzip')).toBe(MediaType.OciLayerGzip)
  })

  it('maps Docker media types to OCI', () => {
    expect(dockerToOciMediaType(MediaType.DockerManifestList)).toBe(MediaType.OciIndex)
    expect(dockerToOciMediaType(MediaType.DockerManifest)).toBe(MediaType.OciManifest)
    expect(dockerToOciMediaType(MediaType.DockerConfig)).toBe(MediaType.OciConfig)
    expect(dockerToOciMediaType(MediaType.DockerLayerGzip)).toBe(MediaType.OciLayerGzip)
    expect(dockerToOciMediaType(MediaType.DockerLayer)).toBe(MediaType.OciLayer)
    expect(dockerToOciMediaType(MediaType.DockerForeignLayer)).toBe(MediaType.OciLayerNonDistributableGzip)
    expect(dockerToOciMediaType(MediaType.OciLayerZstd)).toBe(MediaType.OciLayerZstd)
  })

  it('accepts every manifest type on registry requests', () => {
    for (const t of [MediaType.OciIndex, MediaType.OciManifest, MediaType.DockerManifestList, MediaType.DockerManifest]) expect(MANIFEST_ACCEPT).toContain(t)
  })
})
