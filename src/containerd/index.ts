/**
 * A client of containerd's gRPC API (content, images, leases, diff, snapshots, namespaces) and
 * the image pull from IPFS into containerd that `ipfs-estargz pull` runs.
 */
export * from './errors.js'
export { ContainerdClient, DEFAULTS as CLIENT_DEFAULTS, type ContainerdClientOptions } from './client.js'
export { ContentClient, DEFAULTS as CONTENT_DEFAULTS, type ContentInfo, type WriteStatus, type WriteOptions, type WriteResult } from './content.js'
export { ImagesClient, type ImageRecord } from './images.js'
export { LeasesClient, LEASE_EXPIRE_LABEL, DEFAULTS as LEASE_DEFAULTS, type Lease, type LeaseResource } from './leases.js'
export { DiffClient } from './diff.js'
export { SnapshotsClient, type SnapshotInfo, type SnapshotKind } from './snapshots.js'
export { NamespacesClient, type Namespace } from './namespaces.js'
export type { CallContext, CallOptions } from './rpc.js'
export { pullImage, DEFAULTS as PULL_DEFAULTS, type PullOptions, type PullResult, type PulledLayer, type PullEvent, type PullLayerContext, type PullReader } from './pull.js'
export { containerdConfigSnippet, containerdDropIn, mergeContainerdConfig, DEFAULTS as CONFIG_DEFAULTS, type ContainerdConfigOptions, type ContainerdMajor } from './config.js'
