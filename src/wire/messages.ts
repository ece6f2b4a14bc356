/**
 * containerd's messages as @grpc/proto-loader hands them over with {@link PROTO_LOADER_OPTIONS}
 * (camelCase fields, enums as their names, int64 as decimal strings, defaults filled in): those
 * of the Snapshots service we serve and the ones our containerd client sends and reads; and the
 * plain shapes (numbers and Dates) the client turns them into.
 */
import type { PROTO_LOADER_OPTIONS } from './proto.js'

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

/** containerd.types.Descriptor on the wire (no urls/platform: containerd does not carry them here) */
export interface WireDescriptor {
  mediaType: string
  digest: string
  size: string | number
  annotations: Labels
}

/** A blob descriptor as containerd's API carries it. */
export interface ContainerdDescriptor {
  mediaType: string
  digest: string
  size: number
  annotations?: Labels
}

export function toWireDescriptor (d: ContainerdDescriptor): WireDescriptor {
  return { mediaType: d.mediaType, digest: d.digest, size: String(d.size), annotations: d.annotations ?? {} }
}

export function fromWireDescriptor (d: WireDescriptor | null | undefined): ContainerdDescriptor {
  if (d == null) return { mediaType: '', digest: '', size: 0 }
  const out: ContainerdDescriptor = { mediaType: d.mediaType, digest: d.digest, size: Number(d.size) }
  if (Object.keys(d.annotations ?? {}).length > 0) out.annotations = d.annotations
  return out
}

export function fromTimestamp (t: Timestamp | null | undefined): Date {
  if (t == null) return new Date(0)
  return new Date(Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6))
}
