/**
 * The messages of containerd's API as @grpc/proto-loader hands them over with
 * {@link PROTO_LOADER_OPTIONS} (camelCase fields, enums as names, int64 as decimal strings,
 * defaults filled in), and the public shapes the clients return (numbers and Dates).
 */

// The wire conventions and shared message shapes are the snapshotter's (same protos, same loader).
export { PROTO_LOADER_OPTIONS, type Labels, type Mount, type Empty, type Timestamp as WireTimestamp } from '../snapshotter/api.js'
import type { Labels, Timestamp as WireTimestamp } from '../snapshotter/api.js'

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

export function fromTimestamp (t: WireTimestamp | null | undefined): Date {
  if (t == null) return new Date(0)
  return new Date(Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6))
}
