/**
 * The one interface every image reader implements (OCI layout, oci-archive, docker-archive,
 * registry), and helpers they share.
 */
import { verifyBytes } from './digest.js'
import { BlobTooLargeError } from './errors.js'
import type { Descriptor } from './types.js'

export interface ImageReader {
  /** The reference this reader was opened with, for messages (`oci:/x:latest`, `docker://...`). */
  readonly name: string
  /** The top-level index or manifest the reference points at. */
  root: (signal?: AbortSignal) => Promise<Descriptor>
  /**
   * Streams a blob (manifest, index, config or layer). The stream is verified against
   * `desc.digest` and `desc.size` while it flows: it throws `SizeMismatchError` or
   * `DigestMismatchError` (naming the blob) instead of completing when the bytes are wrong.
   * The hash is only checked at the end: a consumer that stops early has verified nothing.
   */
  fetch: (desc: Descriptor, signal?: AbortSignal) => Promise<AsyncIterable<Uint8Array>>
  /** A whole, verified blob in memory; refuses blobs over `maxBytes` (default 16 MiB). */
  fetchBytes: (desc: Descriptor, options?: { signal?: AbortSignal, maxBytes?: number }) => Promise<Uint8Array>
  /** Releases files, temp dirs and connections. */
  close: () => Promise<void>
}

export const DEFAULTS = {
  /** Cap for blobs read into memory: manifests and configs are small, layers are streamed. */
  maxInMemoryBlob: 16 << 20
} as const

/** Reads a verified stream into memory, enforcing the size cap before reading anything. */
export async function collectBlob (reader: ImageReader, desc: Descriptor, options: { signal?: AbortSignal, maxBytes?: number } = {}): Promise<Uint8Array> {
  const max = options.maxBytes ?? DEFAULTS.maxInMemoryBlob
  if (desc.size > max) throw new BlobTooLargeError(`blob ${desc.digest} in ${reader.name} is ${desc.size} bytes, more than the ${max}-byte cap for in-memory blobs`)
  const parts: Uint8Array[] = []
  for await (const chunk of await reader.fetch(desc, options.signal)) parts.push(chunk)
  const out = parts.length === 1 ? parts[0] : Buffer.concat(parts)
  verifyBytes(out, desc, reader.name) // already verified by fetch; cheap belt and braces
  return out
}
