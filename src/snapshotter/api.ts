/**
 * TypeScript shapes of the `containerd.services.snapshots.v1` messages as @grpc/proto-loader
 * hands them over with {@link PROTO_LOADER_OPTIONS} (camelCase fields, enums as their names,
 * int64 as decimal strings, defaults filled in).
 */

import { join, resolve } from 'node:path'

/** Directory holding our .proto files (`containerd/...`): this file is two levels below the package root in src/ and in dist/. */
export const PROTO_DIR = join(resolve(import.meta.dirname, '..', '..'), 'proto')

/** proto-loader options every gRPC service and client of ours uses (the snapshotter's and the containerd client's). */
export const PROTO_LOADER_OPTIONS = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true
} as const

export type KindName = 'UNKNOWN' | 'VIEW' | 'ACTIVE' | 'COMMITTED'

/** google.protobuf.Timestamp */
export interface Timestamp {
  seconds: string
  nanos: number
}

/** containerd.types.Mount */
export interface Mount {
  type: string
  source: string
  target: string
  options: string[]
}

export type Labels = Record<string, string>

export interface Info {
  name: string
  parent: string
  kind: KindName
  createdAt: Timestamp | null
  updatedAt: Timestamp | null
  labels: Labels
}

export interface PrepareSnapshotRequest {
  snapshotter: string
  key: string
  parent: string
  labels: Labels
}
export interface PrepareSnapshotResponse { mounts: Mount[] }

export interface ViewSnapshotRequest {
  snapshotter: string
  key: string
  parent: string
  labels: Labels
}
export interface ViewSnapshotResponse { mounts: Mount[] }

export interface MountsRequest { snapshotter: string, key: string }
export interface MountsResponse { mounts: Mount[] }

export interface RemoveSnapshotRequest { snapshotter: string, key: string }

export interface CommitSnapshotRequest {
  snapshotter: string
  name: string
  key: string
  labels: Labels
}

export interface StatSnapshotRequest { snapshotter: string, key: string }
export interface StatSnapshotResponse { info: Info | null }

/** google.protobuf.FieldMask */
export interface FieldMask { paths: string[] }

export interface UpdateSnapshotRequest {
  snapshotter: string
  info: Info | null
  updateMask: FieldMask | null
}
export interface UpdateSnapshotResponse { info: Info | null }

export interface ListSnapshotsRequest { snapshotter: string, filters: string[] }
export interface ListSnapshotsResponse { info: Info[] }

export interface UsageRequest { snapshotter: string, key: string }
/** int64 fields arrive and leave as decimal strings (`longs: String`). */
export interface UsageResponse { size: string, inodes: string }

export interface CleanupRequest { snapshotter: string }

/** google.protobuf.Empty */
export type Empty = Record<string, never>

/** Fully-qualified service name, for clients and tests. */
export const SERVICE_NAME = 'containerd.services.snapshots.v1.Snapshots'

/** gRPC metadata key carrying the containerd namespace. */
export const NAMESPACE_METADATA_KEY = 'containerd-namespace'
