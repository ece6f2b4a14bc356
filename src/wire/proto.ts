import { createRequire } from 'node:module'
import { join, resolve } from 'node:path'
import type * as grpc from '@grpc/grpc-js'
import type * as ProtoLoader from '@grpc/proto-loader'

/** Directory holding our .proto files (`containerd/...`): this file is two levels below the package root in src/ and in dist/. */
export const PROTO_DIR = join(resolve(import.meta.dirname, '..', '..'), 'proto')

/** proto-loader options of every gRPC service and client of ours (the snapshotter's and the containerd client's). */
export const PROTO_LOADER_OPTIONS = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true
} as const

/** containerd services we call or serve, by short name → (proto file, fully-qualified service). */
export const SERVICES = {
  content: ['containerd/services/content/v1/content.proto', 'containerd.services.content.v1.Content'],
  images: ['containerd/services/images/v1/images.proto', 'containerd.services.images.v1.Images'],
  leases: ['containerd/services/leases/v1/leases.proto', 'containerd.services.leases.v1.Leases'],
  diff: ['containerd/services/diff/v1/diff.proto', 'containerd.services.diff.v1.Diff'],
  snapshots: ['containerd/services/snapshots/v1/snapshots.proto', 'containerd.services.snapshots.v1.Snapshots'],
  namespaces: ['containerd/services/namespaces/v1/namespace.proto', 'containerd.services.namespaces.v1.Namespaces']
} as const

export type ServiceName = keyof typeof SERVICES

/** gRPC metadata key carrying the containerd namespace (containerd's namespaces.GRPCHeader). */
export const NAMESPACE_HEADER = 'containerd-namespace'
/** gRPC metadata key carrying the lease that protects what a call creates (containerd's leases.GRPCHeader). */
export const LEASE_HEADER = 'containerd-lease'

/** Every service's definition, loaded once per process. */
let loaded: ProtoLoader.PackageDefinition | undefined

/**
 * These services' definitions from our .proto files. The first call loads every service's in
 * one pass and keeps them: the daemon's snapshotter server starts with the daemon, and its
 * containerd client (a pull) then finds its own loaded too, instead of spending tens of ms of
 * synchronous parsing at the start of the daemon's first pull. The loader (and protobufjs under
 * it) is required here, on first use, not when this module is imported: the processes that only
 * read label keys from this module (the FUSE manager) never load it.
 */
export function loadServices<N extends ServiceName> (names: readonly N[]): Record<N, grpc.ServiceDefinition> {
  if (loaded == null) {
    const protoLoader = createRequire(import.meta.url)('@grpc/proto-loader') as typeof ProtoLoader
    loaded = protoLoader.loadSync(Object.values(SERVICES).map(([file]) => file), { ...PROTO_LOADER_OPTIONS, includeDirs: [PROTO_DIR] })
  }
  const def = loaded
  const out: Partial<Record<N, grpc.ServiceDefinition>> = {}
  for (const name of names) {
    const fqn = SERVICES[name][1]
    const svc = def[fqn]
    if (svc == null || 'format' in svc) throw new Error(`${fqn} missing from the proto files in ${PROTO_DIR}`)
    out[name] = svc as grpc.ServiceDefinition
  }
  return out as Record<N, grpc.ServiceDefinition>
}
