/**
 * Shared part of the readers that take an image from files (OCI layout dir, oci-archive,
 * docker-archive): blobs by path, synthesized documents from memory, verification on the way.
 */
import { verifyStream } from './digest.js'
import { BlobNotFoundError, SizeMismatchError } from './errors.js'
import type { LayoutFiles } from './layout-files.js'
import { collectBlob, type ImageReader } from './image-reader.js'
import type { Descriptor } from './types.js'

async function * once (bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes
}

export abstract class FilesReader implements ImageReader {
  /** Blobs that exist only in memory (index.json as a root, a docker-archive's manifest). */
  protected readonly memory = new Map<string, Uint8Array>()

  constructor (readonly name: string, protected readonly files: LayoutFiles) {}

  abstract root (signal?: AbortSignal): Promise<Descriptor>
  /** Path of a blob in `files`, or `undefined` if the image has no such blob. */
  protected abstract blobPath (digest: string): string | undefined

  async fetch (desc: Descriptor, signal?: AbortSignal): Promise<AsyncIterable<Uint8Array>> {
    signal?.throwIfAborted()
    const mem = this.memory.get(desc.digest) ?? (desc.data != null ? Buffer.from(desc.data, 'base64') : undefined)
    if (mem != null) return verifyStream(once(mem), desc, this.name)
    const path = this.blobPath(desc.digest)
    const size = path == null ? undefined : await this.files.size(path)
    if (path == null || size == null) throw new BlobNotFoundError(desc.digest, this.name)
    // Fail before streaming when the file cannot possibly match.
    if (size !== desc.size) throw new SizeMismatchError(desc.digest, desc.size, size, this.name)
    return verifyStream(this.files.stream(path, signal), desc, this.name)
  }

  async fetchBytes (desc: Descriptor, options?: { signal?: AbortSignal, maxBytes?: number }): Promise<Uint8Array> {
    return await collectBlob(this, desc, options)
  }

  async close (): Promise<void> {
    await this.files.close()
  }
}
