/**
 * The messages of containerd's API as @grpc/proto-loader hands them over with
 * {@link PROTO_LOADER_OPTIONS} (camelCase fields, enums as names, int64 as decimal strings,
 * defaults filled in), and the public shapes the clients return (numbers and Dates).
 */

export const PROTO_LOADER_OPTIONS = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true
} as const

export type Labels = Record<string, string>

/** google.protobuf.Timestamp on the wire */
export interface WireTimestamp { seconds: string, nanos: number }

/** containerd.types.Descriptor on the wire (no urls/platform: containerd does not carry them here) */
export interface WireDescriptor {
  mediaType: string
  digest: string
  size: string | number
  annotations: Labels
}

/** containerd.types.Mount: one mount(2) call for containerd, the shim or the differ to perform */
export interface Mount {
  type: string
  source: string
  target: string
  options: string[]
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

/** google.protobuf.Empty */
export type Empty = Record<string, never>
