/**
 * The OCI image model (image-spec v1.1) as TypeScript types. Docker v2 schema 2 documents have
 * the same shape with different media types, so they use these types too.
 */

/** `os/architecture[/variant]` plus the rarely used extras. */
export interface Platform {
  architecture: string
  os: string
  variant?: string
  'os.version'?: string
  'os.features'?: string[]
  features?: string[]
}

/** A typed pointer to a blob. */
export interface Descriptor {
  mediaType: string
  digest: string
  size: number
  urls?: string[]
  annotations?: Record<string, string>
  platform?: Platform
  artifactType?: string
  /** Embedded base64 content (OCI 1.1). */
  data?: string
}

export interface Manifest {
  schemaVersion: 2
  mediaType?: string
  artifactType?: string
  config: Descriptor
  layers: Descriptor[]
  subject?: Descriptor
  annotations?: Record<string, string>
}

/** An OCI image index or a Docker manifest list. */
export interface Index {
  schemaVersion: 2
  mediaType?: string
  artifactType?: string
  manifests: Descriptor[]
  subject?: Descriptor
  annotations?: Record<string, string>
}

export interface HealthCheck {
  Test?: string[]
  Interval?: number
  Timeout?: number
  StartPeriod?: number
  Retries?: number
}

/** The runtime part of an image configuration. */
export interface ContainerConfig {
  User?: string
  ExposedPorts?: Record<string, Record<string, never>>
  Env?: string[]
  Entrypoint?: string[] | null
  Cmd?: string[] | null
  Volumes?: Record<string, Record<string, never>>
  WorkingDir?: string
  Labels?: Record<string, string>
  StopSignal?: string
  ArgsEscaped?: boolean
  Healthcheck?: HealthCheck
  OnBuild?: string[] | null
  Shell?: string[]
}

export interface HistoryEntry {
  created?: string
  created_by?: string
  author?: string
  comment?: string
  empty_layer?: boolean
}

export interface RootFs {
  type: 'layers'
  diff_ids: string[]
}

/**
 * An image configuration (OCI or Docker). Parsing keeps every field of the JSON, also the ones
 * not typed here (Docker's `container_config`, `docker_version`, ...), so a rewrite that only
 * touches `rootfs.diff_ids` preserves the rest.
 */
export interface ImageConfig {
  architecture: string
  os: string
  variant?: string
  'os.version'?: string
  'os.features'?: string[]
  created?: string
  author?: string
  config?: ContainerConfig
  rootfs: RootFs
  history?: HistoryEntry[]
  [extra: string]: unknown
}

/** Annotation carrying the tag of an entry in an OCI layout's index.json. */
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name'

/**
 * Annotation carrying a blob's CID (`bafy…`) on its descriptor where `ipfs://` URLs cannot go:
 * the copy of an image pushed to a registry, which refuses descriptors whose `urls` are not
 * http(s). Under containerd's `containerd.io/snapshot/` prefix, so containerd passes it on to
 * the snapshotter of a layer it unpacks.
 */
export const IPFS_CID_ANNOTATION = 'containerd.io/snapshot/ipfs-estargz/cid'

/**
 * Annotations on an eStargz layer published to IPFS: the CID of its TOC member's own leaf block
 * and the member's offset in the blob, so a mount fetches the TOC in one round trip, without
 * the footer and the DAG's interior nodes before it. Hints only: a mount checks them against
 * the blob's size and the TOC digest, and reads the footer when they do not hold.
 */
export const TOC_CID_ANNOTATION = 'containerd.io/snapshot/ipfs-estargz/toc.cid'
export const TOC_OFFSET_ANNOTATION = 'containerd.io/snapshot/ipfs-estargz/toc.offset'
