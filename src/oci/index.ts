/**
 * The OCI image model, image sources (OCI layout, oci-archive, docker-archive, registry) and
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
export { type ImageSource, collectBlob, DEFAULTS as SOURCE_DEFAULTS } from './source.js'
export { resolveImages, type Resolution, type ResolvedImage, type ResolvedIndex, type ResolveOptions } from './resolve.js'
export { OciLayoutSource, openOciLayout, openOciArchive } from './layout-source.js'
export { DockerArchiveSource, openDockerArchive } from './docker-archive.js'
export { TarArchive } from './tar-archive.js'
export { openImageSource, type OpenSourceOptions } from './open.js'
export { OciLayoutWriter, DEFAULTS as LAYOUT_WRITER_DEFAULTS } from './layout-writer.js'
export { RegistryClient, DEFAULTS as REGISTRY_DEFAULTS, type RegistryClientOptions, type Access } from './registry/client.js'
export { Repository, DEFAULTS as REPOSITORY_DEFAULTS, type FetchedManifest } from './registry/repository.js'
export { RegistrySource } from './registry/source.js'
export { pushImage, imageFromSource, DEFAULTS as PUSH_DEFAULTS, type PushBlob, type PushManifest, type PushImage, type PushOptions, type PushResult } from './registry/push.js'
export { parseChallenge, loadDockerCredentials, dockerConfigPath, type Credentials, type Challenge } from './registry/auth.js'
