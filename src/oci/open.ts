/**
 * Opens any image reference as an {@link ImageReader}.
 */
import { openDockerArchive } from './docker-archive.js'
import { openOciArchive, openOciLayout } from './layout-reader.js'
import { parseImageReference, type ImageReference } from './reference.js'
import type { RegistryClientOptions } from './registry/client.js'
import { RegistryImageReader } from './registry/image-reader.js'
import type { ImageReader } from './image-reader.js'

export type OpenReaderOptions = RegistryClientOptions

/** `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE`, `docker://HOST/REPO[:TAG|@DIGEST]`. */
export async function openImageReader (reference: string | ImageReference, options: OpenReaderOptions = {}): Promise<ImageReader> {
  const ref = typeof reference === 'string' ? parseImageReference(reference) : reference
  switch (ref.transport) {
    case 'oci': return await openOciLayout(ref.path, ref.tag)
    case 'oci-archive': return await openOciArchive(ref.path, ref.tag)
    case 'docker-archive': return await openDockerArchive(ref.path, { tag: ref.tag, index: ref.index })
    case 'docker': return RegistryImageReader.open(ref, options)
  }
}
