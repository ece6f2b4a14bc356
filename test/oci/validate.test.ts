import { describe, expect, it } from 'vitest'
import { MalformedConfigError, MalformedIndexError, MalformedManifestError, UnknownMediaTypeError } from '../../src/oci/errors.js'
import { MediaType } from '../../src/oci/media-types.js'
import { parseConfig, parseIndex, parseManifest } from '../../src/oci/validate.js'
import { makeImage, makeMultiPlatform } from '../../scripts/fixtures/oci-image.js'

const j = (v: unknown): Uint8Array => Buffer.from(JSON.stringify(v))
const BLOB = 'sha256:' + 'b'.repeat(64)

describe('manifest/index/config validation', () => {
  const img = makeImage()

  it('accepts valid documents', () => {
    expect(parseManifest(img.manifest.bytes, BLOB, MediaType.OciManifest).layers).toHaveLength(2)
    expect(parseIndex(makeMultiPlatform().index.bytes, BLOB).manifests).toHaveLength(2)
    expect(parseConfig(img.config.bytes, BLOB).rootfs.diff_ids).toHaveLength(2)
    expect(parseManifest(makeImage({ docker: true }).manifest.bytes, BLOB).mediaType).toBe(MediaType.DockerManifest)
    // an index.json without mediaType is an OCI index
    expect(parseIndex(j({ schemaVersion: 2, manifests: [] }), BLOB).manifests).toEqual([])
  })

  it('keeps unknown config fields', () => {
    const c = parseConfig(j({ ...img.config.json, docker_version: '24.0' }), BLOB)
    expect(c.docker_version).toBe('24.0')
  })

  const bad: Array<[string, unknown, string?]> = [
    ['not json', '{', 'not valid JSON'],
    ['schemaVersion 1', { ...makeImage().manifest.json, schemaVersion: 1 }, 'schemaVersion'],
    ['no config', { schemaVersion: 2, mediaType: MediaType.OciManifest, layers: [] }, 'config'],
    ['bad layer digest', { ...makeImage().manifest.json, layers: [{ mediaType: MediaType.OciLayerGzip, digest: 'sha256:xyz', size: 1 }] }, 'layers[0].digest'],
    ['negative size', { ...makeImage().manifest.json, layers: [{ mediaType: MediaType.OciLayerGzip, digest: BLOB, size: -1 }] }, 'layers[0].size'],
    ['manifests field', { ...makeImage().manifest.json, manifests: [] }, 'manifests']
  ]
  for (const [name, doc, msg] of bad) {
    it(`rejects a manifest with ${name}`, () => {
      const bytes = typeof doc === 'string' ? Buffer.from(doc) : j(doc)
      const err = (() => { try { parseManifest(bytes, BLOB, MediaType.OciManifest) } catch (e) { return e as Error } })()
      expect(err).toBeInstanceOf(MalformedManifestError)
      expect(err?.message).toContain(BLOB)
      if (msg != null) expect(err?.message).toContain(msg)
    })
  }

  it('checks mediaType consistency with the descriptor', () => {
    expect(() => parseManifest(img.manifest.bytes, BLOB, MediaType.DockerManifest)).toThrow(/does not match/)
    expect(() => parseManifest(j({ ...img.manifest.json, mediaType: undefined }), BLOB)).toThrow(/mediaType is missing/)
    expect(() => parseManifest(j({ ...img.manifest.json, mediaType: 'application/x-thing' }), BLOB)).toThrow(UnknownMediaTypeError)
    expect(() => parseIndex(img.manifest.bytes, BLOB)).toThrow(MalformedIndexError)
  })

  it('rejects bad configs', () => {
    expect(() => parseConfig(j({ os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }), BLOB)).toThrow(/architecture/)
    expect(() => parseConfig(j({ os: 'linux', architecture: 'amd64' }), BLOB)).toThrow(MalformedConfigError)
    expect(() => parseConfig(j({ os: 'linux', architecture: 'amd64', rootfs: { type: 'layers', diff_ids: ['x'] } }), BLOB)).toThrow(/diff_ids\[0\]/)
  })
})
