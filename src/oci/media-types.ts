/**
 * Media types of OCI and Docker (v2 schema 2) images and their classification.
 */
export const MediaType = {
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciConfig: 'application/vnd.oci.image.config.v1+json',
  OciLayer: 'application/vnd.oci.image.layer.v1.tar',
  OciLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  OciLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  OciLayerNonDistributable: 'application/vnd.oci.image.layer.nondistributable.v1.tar',
  OciLayerNonDistributableGzip: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  OciLayerNonDistributableZstd: 'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
  OciEmpty: 'application/vnd.oci.empty.v1+json',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerConfig: 'application/vnd.docker.container.image.v1+json',
  DockerLayer: 'application/vnd.docker.image.rootfs.diff.tar',
  DockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  DockerForeignLayer: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip'
} as const

/** How a layer's bytes are compressed. */
export type LayerCompression = 'none' | 'gzip' | 'zstd'

const INDEX_TYPES = new Set<string>([MediaType.OciIndex, MediaType.DockerManifestList])
const MANIFEST_TYPES = new Set<string>([MediaType.OciManifest, MediaType.DockerManifest])
const CONFIG_TYPES = new Set<string>([MediaType.OciConfig, MediaType.DockerConfig])

const LAYER_TYPES = new Map<string, { compression: LayerCompression, foreign: boolean }>([
  [MediaType.OciLayer, { compression: 'none', foreign: false }],
  [MediaType.OciLayerGzip, { compression: 'gzip', foreign: false }],
  [MediaType.OciLayerZstd, { compression: 'zstd', foreign: false }],
  [MediaType.OciLayerNonDistributable, { compression: 'none', foreign: true }],
  [MediaType.OciLayerNonDistributableGzip, { compression: 'gzip', foreign: true }],
  [MediaType.OciLayerNonDistributableZstd, { compression: 'zstd', foreign: true }],
  [MediaType.DockerLayer, { compression: 'none', foreign: false }],
  [MediaType.DockerLayerGzip, { compression: 'gzip', foreign: false }],
  [MediaType.DockerForeignLayer, { compression: 'gzip', foreign: true }]
])

/** Accept header value for manifest requests: every manifest and index type we understand. */
export const MANIFEST_ACCEPT = [MediaType.OciIndex, MediaType.OciManifest, MediaType.DockerManifestList, MediaType.DockerManifest].join(', ')

export function isIndexMediaType (mt: string): boolean {
  return INDEX_TYPES.has(mt)
}

export function isManifestMediaType (mt: string): boolean {
  return MANIFEST_TYPES.has(mt)
}

/** Index or manifest: the JSON documents a registry serves from `/manifests/`. */
export function isManifestOrIndexMediaType (mt: string): boolean {
  return INDEX_TYPES.has(mt) || MANIFEST_TYPES.has(mt)
}

export function isConfigMediaType (mt: string): boolean {
  return CONFIG_TYPES.has(mt)
}

export function isLayerMediaType (mt: string): boolean {
  return LAYER_TYPES.has(mt)
}

/** Foreign (Docker) and non-distributable (OCI) layers: their blobs may live only at their `urls`. */
export function isForeignLayer (mt: string): boolean {
  return LAYER_TYPES.get(mt)?.foreign === true
}

/** Compression of a known layer media type, `undefined` for anything else. */
export function layerCompression (mt: string): LayerCompression | undefined {
  return LAYER_TYPES.get(mt)?.compression
}
