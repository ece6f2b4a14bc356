/**
 * containerd's API as it travels, in one place for its client (containerd/) and our snapshotter
 * (snapshotter/): where our .proto files are and how they are loaded, the message shapes, the
 * gRPC metadata keys.
 */
export { PROTO_DIR, PROTO_LOADER_OPTIONS, SERVICES, NAMESPACE_HEADER, LEASE_HEADER, loadServices, type ServiceName } from './proto.js'
export * from './messages.js'
