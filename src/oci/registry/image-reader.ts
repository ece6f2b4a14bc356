/**
 * `docker://HOST/REPO[:TAG|@DIGEST]` as an {@link ImageReader}.
 */
import { verifyStream } from '../digest.js'
import { isManifestOrIndexMediaType } from '../media-types.js'
import { formatImageReference, type RegistryReference } from '../reference.js'
import { collectBlob, type ImageReader } from '../image-reader.js'
import type { Descriptor } from '../types.js'
import { RegistryClient, type RegistryClientOptions } from './client.js'
import { Repository } from './repository.js'

async function * once (bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes
}

export class RegistryImageReader implements ImageReader {
  readonly name: string
  readonly repository: Repository
  private rootDesc?: Descriptor
  /** Manifests already fetched (the root), so they are not downloaded twice. */
  private readonly manifests = new Map<string, Uint8Array>()

  constructor (readonly reference: RegistryReference, client: RegistryClient) {
    this.name = formatImageReference(reference)
    this.repository = new Repository(client, reference.repository)
  }

  static open (reference: RegistryReference, options: RegistryClientOptions = {}): RegistryImageReader {
    return new RegistryImageReader(reference, new RegistryClient(reference.registry, options))
  }

  async root (signal?: AbortSignal): Promise<Descriptor> {
    if (this.rootDesc != null) return this.rootDesc
    const ref = this.reference.digest ?? this.reference.tag ?? 'latest'
    const m = await this.repository.getManifest(ref, signal)
    this.manifests.set(m.descriptor.digest, m.bytes)
    this.rootDesc = m.descriptor
    return m.descriptor
  }

  async fetch (desc: Descriptor, signal?: AbortSignal): Promise<AsyncIterable<Uint8Array>> {
    const cached = this.manifests.get(desc.digest)
    if (cached != null) return verifyStream(once(cached), desc, this.repository.where)
    if (isManifestOrIndexMediaType(desc.mediaType)) {
      const m = await this.repository.getManifest(desc.digest, signal)
      return verifyStream(once(m.bytes), desc, this.repository.where)
    }
    const stream = await this.repository.blobStream(desc.digest, signal)
    return verifyStream(stream, desc, this.repository.where)
  }

  async fetchBytes (desc: Descriptor, options?: { signal?: AbortSignal, maxBytes?: number }): Promise<Uint8Array> {
    return await collectBlob(this, desc, options)
  }

  async close (): Promise<void> {
    this.manifests.clear()
  }
}
