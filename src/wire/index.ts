/**
 * containerd's API as it travels, in one place for its client (containerd/) and our snapshotter
 * (snapshotter/): where our .proto files are and how they are loaded, the message shapes, the
 * gRPC metadata keys, and every label we read or write on content and snapshots.
 */
export { PROTO_DIR, PROTO_LOADER_OPTIONS, SERVICES, NAMESPACE_HEADER, LEASE_HEADER, loadServices, type ServiceName } from './proto.js'
export * from './messages.js'
export { LABELS, REMOTE_LABEL_VALUE, MAX_LABEL_SIZE, MAX_FALLBACK_MESSAGE, chainIds, childGcLabels, inheritedLabels, commaListWithinLimit, tocHintOf, type TocHint } from './labels.js'
