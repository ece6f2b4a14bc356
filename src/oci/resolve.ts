/**
 * Walks an image from its root: index → manifests (all platforms or one) → config + layers.
 */
import { ImageNotFoundError, PlatformNotFoundError, UnknownMediaTypeError } from './errors.js'
import { isConfigMediaType, isIndexMediaType, isLayerMediaType, isManifestMediaType } from './media-types.js'
import { formatPlatform, platformMatches } from './platform.js'
import type { ImageReader } from './image-reader.js'
import type { Descriptor, ImageConfig, Index, Manifest, Platform } from './types.js'
import { configPlatform, parseConfig, parseIndex, parseManifest } from './validate.js'

/** One single-platform image. */
export interface ResolvedImage {
  /** The manifest's descriptor as found in its parent index (with `platform`), or the root. */
  descriptor: Descriptor
  manifest: Manifest
  manifestBytes: Uint8Array
  config: ImageConfig
  configBytes: Uint8Array
  /** `manifest.layers`, for convenience. */
  layers: Descriptor[]
  platform: Platform
}

/** A resolved index (possibly nested inside the root). */
export interface ResolvedIndex {
  descriptor: Descriptor
  index: Index
  bytes: Uint8Array
}

export interface Resolution {
  root: Descriptor
  /** Every index visited, root first. Empty when the root is a manifest. */
  indexes: ResolvedIndex[]
  /** The images selected, in index order. */
  images: ResolvedImage[]
}

export interface ResolveOptions {
  /** Keep only the manifest for this platform (`parsePlatform('linux/amd64')`). */
  platform?: Platform
  signal?: AbortSignal
}

/** Index entries that are not runnable images (BuildKit attestations). */
function isAttestation (d: Descriptor): boolean {
  return d.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest' ||
    (d.platform?.os === 'unknown' && d.platform.architecture === 'unknown')
}

const MAX_DEPTH = 4

async function resolveManifest (reader: ImageReader, desc: Descriptor, signal?: AbortSignal): Promise<ResolvedImage> {
  const manifestBytes = await reader.fetchBytes(desc, { signal })
  const manifest = parseManifest(manifestBytes, desc.digest, desc.mediaType)
  if (!isConfigMediaType(manifest.config.mediaType)) throw new UnknownMediaTypeError(manifest.config.digest, manifest.config.mediaType, `config (in manifest ${desc.digest})`)
  for (const l of manifest.layers) {
    if (!isLayerMediaType(l.mediaType)) throw new UnknownMediaTypeError(l.digest, l.mediaType, `layer (in manifest ${desc.digest})`)
  }
  const configBytes = await reader.fetchBytes(manifest.config, { signal })
  const config = parseConfig(configBytes, manifest.config.digest)
  return { descriptor: desc, manifest, manifestBytes, config, configBytes, layers: manifest.layers, platform: desc.platform ?? configPlatform(config) }
}

/**
 * Resolves the images under `reader.root()`. With `platform`, exactly the matching image is
 * returned (the first match, as containerd does) or {@link PlatformNotFoundError} lists the
 * platforms available. Unknown media types raise {@link UnknownMediaTypeError} naming the blob.
 */
export async function resolveImages (reader: ImageReader, options: ResolveOptions = {}): Promise<Resolution> {
  const root = await reader.root(options.signal)
  const out: Resolution = { root, indexes: [], images: [] }
  const seen: string[] = []

  const walk = async (desc: Descriptor, depth: number): Promise<void> => {
    if (isIndexMediaType(desc.mediaType)) {
      if (depth > MAX_DEPTH) throw new ImageNotFoundError(`index ${desc.digest} in ${reader.name} nests more than ${MAX_DEPTH} levels deep`)
      const bytes = await reader.fetchBytes(desc, { signal: options.signal })
      const index = parseIndex(bytes, desc.digest, desc.mediaType)
      out.indexes.push({ descriptor: desc, index, bytes })
      for (const m of index.manifests) {
        if (isAttestation(m)) continue
        if (isManifestMediaType(m.mediaType)) {
          // Filter on the index's platform field before fetching anything for other platforms.
          if (options.platform != null && m.platform != null) {
            seen.push(formatPlatform(m.platform))
            if (!platformMatches(m.platform, options.platform)) continue
          }
          const img = await resolveManifest(reader, m, options.signal)
          if (options.platform != null && m.platform == null) {
            seen.push(formatPlatform(img.platform))
            if (!platformMatches(img.platform, options.platform)) continue
          }
          out.images.push(img)
          if (options.platform != null) return
        } else if (isIndexMediaType(m.mediaType)) {
          await walk(m, depth + 1)
          if (options.platform != null && out.images.length > 0) return
        } else {
          throw new UnknownMediaTypeError(m.digest, m.mediaType, `manifest (in index ${desc.digest})`)
        }
      }
    } else if (isManifestMediaType(desc.mediaType)) {
      const img = await resolveManifest(reader, desc, options.signal)
      seen.push(formatPlatform(img.platform))
      if (options.platform == null || platformMatches(img.platform, options.platform)) out.images.push(img)
    } else {
      throw new UnknownMediaTypeError(desc.digest, desc.mediaType, 'root manifest')
    }
  }

  await walk(root, 0)
  if (out.images.length === 0) {
    if (options.platform != null) {
      throw new PlatformNotFoundError(`no image for platform ${formatPlatform(options.platform)} in ${reader.name} (available: ${seen.length > 0 ? [...new Set(seen)].join(', ') : 'none'})`)
    }
    throw new ImageNotFoundError(`no image manifests in ${reader.name}`)
  }
  return out
}
