/**
 * The OCI image model, image readers (OCI layout, oci-archive, docker-archive, registry) and
 * sinks (OCI layout writer, registry push).
 */
export * from './errors.js'
export * from './media-types.js'
export type * from './types.js'
export { REF_NAME_ANNOTATION } from './types.js'
export { parseDigest, isDigest, digestOf, Digester, verifyStream, verifyBytes, type ParsedDigest } from './digest.js'
export { parsePlatform, formatPlatform, platformMatches, normalizePlatform, hostPlatform } from './platform.js'
export { parseManifest, parseIndex, parseConfig, configPlatform, checkDescriptor } from './validate.js'
export { parseImageReference, parseRegistryReference, formatImageReference, type ImageReference, type OciLayoutReference, type OciArchiveReference, type DockerArchiveReference, type RegistryReference } from './reference.js'
export { type ImageReader, collectBlob, DEFAULTS as IMAGE_READER_DEFAULTS } from './image-reader.js'
export { resolveImages, type Resolution, type ResolvedImage, type ResolvedIndex, type ResolveOptions } from './resolve.js'
export { OciLayoutReader, openOciLayout, openOciArchive } from './layout-reader.js'
export { DockerArchiveReader, openDockerArchive } from './docker-archive.js'
export { TarArchive } from './tar-archive.js'
export { openImageReader, type OpenReaderOptions } from './open.js'
export { OciLayoutWriter, DEFAULTS as LAYOUT_WRITER_DEFAULTS } from './layout-writer.js'
export { RegistryClient, DEFAULTS as REGISTRY_DEFAULTS, type RegistryClientOptions, type Access } from './registry/client.js'
export { Repository, DEFAULTS as REPOSITORY_DEFAULTS, type FetchedManifest } from './registry/repository.js'
export { RegistryImageReader } from './registry/image-reader.js'
export { pushImage, imageFromReader, DEFAULTS as PUSH_DEFAULTS, type PushBlob, type PushManifest, type PushImage, type PushOptions, type PushResult } from './registry/push.js'
export { parseChallenge, loadDockerCredentials, dockerConfigPath, type Credentials, type Challenge } from './registry/auth.js'
