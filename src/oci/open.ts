/**
 * Opens any image reference as an {@link ImageSource}.
 */
import { openDockerArchive } from './docker-archive.js'
import { openOciArchive, openOciLayout } from './layout-source.js'
import { parseImageReference, type ImageReference } from './reference.js'
import type { RegistryClientOptions } from './registry/client.js'
import { RegistrySource } from './registry/source.js'
import type { ImageSource } from './source.js'

export type OpenSourceOptions = RegistryClientOptions

/** `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE`, `docker://HOST/REPO[:TAG|@DIGEST]`. */
export async function openImageSource (reference: string | ImageReference, options: OpenSourceOptions = {}): Promise<ImageSource> {
  const ref = typeof reference === 'string' ? parseImageReference(reference) : reference
  switch (ref.transport) {
    case 'oci': return await openOciLayout(ref.path, ref.tag)
    case 'oci-archive': return await openOciArchive(ref.path, ref.tag)
    case 'docker-archive': return await openDockerArchive(ref.path, { tag: ref.tag, index: ref.index })
    case 'docker': return RegistrySource.open(ref, options)
  }
}
