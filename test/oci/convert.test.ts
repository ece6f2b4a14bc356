import { describe, expect, it } from 'vitest'
import { describeJson, indexToOci, manifestToOci } from '../../src/oci/convert.js'
import { MediaType } from '../../src/oci/media-types.js'
import { parseIndex, parseManifest } from '../../src/oci/validate.js'
import { makeImage, makeMultiPlatform } from '../../scripts/fixtures/oci-image.js'
import { sha256 } from '../../scripts/fixtures/digest.js'

describe('Docker → OCI document conversion', () => {
  it('converts a Docker manifest, keeping digests, sizes and annotations', () => {
    const img = makeImage({ docker: true })
    const m = manifestToOci({ ...img.manifest.json, annotations: { a: 'b' } })
    expect(m.mediaType).toBe(MediaType.OciManifest)
    expect(m.config).toEqual({ ...img.config.descriptor, mediaType: MediaType.OciConfig })
    expect(m.layers.map(l => l.mediaType)).toEqual([MediaType.OciLayer, MediaType.OciLayer])
    expect(m.layers.map(l => l.digest)).toEqual(img.layers.map(l => l.descriptor.digest))
    expect(m.annotations).toEqual({ a: 'b' })
    const { descriptor, bytes } = describeJson(MediaType.OciManifest, m)
    expect(descriptor.digest).toBe(sha256(bytes))
    expect(parseManifest(bytes, descriptor.digest, descriptor.mediaType).mediaType).toBe(MediaType.OciManifest)
  })

  it('converts a Docker manifest list', () => {
    const idx = indexToOci(makeMultiPlatform({ docker: true }).index.json)
    expect(idx.mediaType).toBe(MediaType.OciIndex)
    expect(idx.manifests.map(m => m.mediaType)).toEqual([MediaType.OciManifest, MediaType.OciManifest])
    expect(idx.manifests[1].platform).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' })
    expect(() => parseIndex(Buffer.from(JSON.stringify(idx)), 'x')).not.toThrow()
  })
})
