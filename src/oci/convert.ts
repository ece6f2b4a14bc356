/**
 * Docker → OCI conversion of whole documents (the media types inside them), and the JSON
 * encoding used for documents this project writes.
 */
import { digestOf } from './digest.js'
import { dockerToOciMediaType, MediaType } from './media-types.js'
import type { Descriptor, Index, Manifest } from './types.js'

function convertDescriptor (d: Descriptor): Descriptor {
  return { ...d, mediaType: dockerToOciMediaType(d.mediaType) }
}

/** The manifest with OCI media types (itself, its config and layers); other fields kept. */
export function manifestToOci (m: Manifest): Manifest {
  return { ...m, mediaType: MediaType.OciManifest, config: convertDescriptor(m.config), layers: m.layers.map(convertDescriptor) }
}

/** The index with OCI media types (itself and its entries); other fields kept. */
export function indexToOci (i: Index): Index {
  return { ...i, mediaType: MediaType.OciIndex, manifests: i.manifests.map(convertDescriptor) }
}

/** Compact JSON bytes of a document (no trailing newline, like containerd and Go's json.Marshal order of our objects). */
export function encodeJson (value: unknown): Uint8Array {
  return Buffer.from(JSON.stringify(value))
}

/** Encodes a document and describes it. */
export function describeJson (mediaType: string, value: unknown, extra: Partial<Descriptor> = {}): { descriptor: Descriptor, bytes: Uint8Array } {
  const bytes = encodeJson(value)
  return { descriptor: { mediaType, digest: digestOf(bytes), size: bytes.length, ...extra }, bytes }
}
