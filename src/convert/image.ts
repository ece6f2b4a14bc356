import { availableParallelism } from 'node:os'
import { sha256Digest } from '../estargz/index.js'
import {
  MediaType, REF_NAME_ANNOTATION, resolveImages, type Descriptor, type ImageReader, type Index, type Manifest, type Platform
} from '../oci/index.js'
import type { Logger } from '../logging.js'
import { ConversionError } from './errors.js'
import { convertLayer, type ConvertedLayer, type LayerOptions } from './layer.js'
import type { BlobPublisher } from './publisher.js'
import { limiter } from '../limit.js'

/** Conversion defaults, in one place. */
export const DEFAULTS = {
  /** Layers converted at once (each also compresses its members in parallel). */
  layerConcurrency: Math.max(1, Math.min(2, availableParallelism())),
  /** Tag given to the image in the layout's index.json. */
  tag: 'latest',
  /** Indentation of the layout's index.json (matches the OCI layout writer). */
  indexIndent: 0
} as const

export interface ConvertOptions {
  /** Only this platform of a multi-platform image. */
  platform?: Platform
  chunkSize?: number
  compressionLevel?: number
  layerConcurrency?: number
  tag?: string
  /** What the user called the source, recorded with the image. */
  name: string
  tmpDir: string
  signal?: AbortSignal
  logger: Logger
  onProgress?: (event: ConvertProgress) => void
  /** Per-layer options (by source descriptor): prioritized files, whether it may be kept as is. */
  layerOptions?: (layer: Descriptor) => Pick<LayerOptions, 'prioritizedFiles' | 'reusable'> | undefined
}

/** Progress of a conversion, per layer. */
export type ConvertProgress =
  | { type: 'layer:start', digest: string, size: number }
  | { type: 'layer:bytes', digest: string, bytes: number }
  | { type: 'layer:done', digest: string, layer: ConvertedLayer }

export interface ConvertedImage {
  manifest: Descriptor
  config: Descriptor
  platform?: Platform
  layers: ConvertedLayer[]
}

export interface ConversionResult {
  /** The top-level index (multi-platform sources) or manifest, with its URLs. */
  root: Descriptor
  /** index.json of the image's OCI layout, the same bytes every publisher stores. */
  indexJson: Uint8Array
  images: ConvertedImage[]
  /** Every blob written, children first. */
  blobs: Descriptor[]
}

function json (value: unknown): Uint8Array {
  return Buffer.from(JSON.stringify(value))
}

/** index.json of an OCI layout holding one image tagged `tag` (as OciLayoutWriter writes it). */
export function layoutIndexJson (root: Descriptor, tag: string): Uint8Array {
  const entry: Descriptor = { ...root, annotations: { ...root.annotations, [REF_NAME_ANNOTATION]: tag } }
  const index: Index = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [entry] }
  return Buffer.from(JSON.stringify(index, null, DEFAULTS.indexIndent || undefined))
}

/**
 * Converts an image (every platform, or one) to eStargz and publishes every blob, children
 * first, through each publisher: layers (converted in parallel, each once even when several
 * platforms share it), configs with rewritten `diff_ids`, OCI manifests, and an OCI index when
 * the source had one. Docker media types become OCI ones; history, labels and annotations stay.
 */
export async function convertImage (source: ImageReader, publishers: BlobPublisher[], options: ConvertOptions): Promise<ConversionResult> {
  // One failing layer stops the others: nothing keeps running after this function returns.
  const ac = new AbortController()
  const onAbort = (): void => ac.abort(options.signal?.reason)
  options.signal?.addEventListener('abort', onAbort, { once: true })
  const running = new Set<Promise<unknown>>()
  try {
    return await convert(source, publishers, { ...options, signal: ac.signal }, running)
  } catch (err) {
    ac.abort(err)
    await Promise.allSettled([...running])
    throw err
  } finally {
    options.signal?.removeEventListener('abort', onAbort)
  }
}

async function convert (source: ImageReader, publishers: BlobPublisher[], options: ConvertOptions, running: Set<Promise<unknown>>): Promise<ConversionResult> {
  const { signal, logger } = options
  const tag = options.tag ?? DEFAULTS.tag
  const resolution = await resolveImages(source, { platform: options.platform, signal })
  const blobs: Descriptor[] = []
  const put = async (mediaType: string, bytes: Uint8Array, extra: Partial<Descriptor> = {}): Promise<Descriptor> => {
    const desc: Descriptor = { mediaType, digest: sha256Digest(bytes), size: bytes.length }
    const urls: string[] = []
    for (const p of publishers) urls.push(...(await p.putBytes(desc, bytes, signal)).urls)
    const out: Descriptor = { ...desc, ...(urls.length > 0 ? { urls } : {}), ...extra }
    blobs.push(out)
    return out
  }

  const limit = limiter(options.layerConcurrency ?? DEFAULTS.layerConcurrency)
  const layers = new Map<string, Promise<ConvertedLayer>>()
  const convertOnce = async (desc: Descriptor, diffID: string | undefined): Promise<ConvertedLayer> => {
    let p = layers.get(desc.digest)
    if (p == null) {
      p = limit(async () => {
        options.onProgress?.({ type: 'layer:start', digest: desc.digest, size: desc.size })
        try {
          const layer = await convertLayer(source, desc, diffID, publishers, {
            ...options.layerOptions?.(desc),
            chunkSize: options.chunkSize,
            compressionLevel: options.compressionLevel,
            tmpDir: options.tmpDir,
            signal,
            logger,
            onBytes: (bytes) => options.onProgress?.({ type: 'layer:bytes', digest: desc.digest, bytes })
          })
          blobs.push(layer.descriptor)
          options.onProgress?.({ type: 'layer:done', digest: desc.digest, layer })
          logger.debug({ layer: desc.digest, converted: layer.descriptor.digest, reused: layer.reused }, 'layer converted')
          return layer
        } catch (err) {
          if (signal?.aborted === true) throw err
          const e = err as Error & { code?: string }
          // Keep the typed error, but say which layer it was.
          e.message = `layer ${desc.digest} of ${source.name}: ${e.message}`
          throw e
        }
      })
      layers.set(desc.digest, p)
      running.add(p)
      p.catch(() => {})
    }
    return await p
  }

  const images: ConvertedImage[] = []
  for (const img of resolution.images) {
    const diffIDs = img.config.rootfs.diff_ids
    if (diffIDs.length !== img.layers.length) throw new ConversionError(`config ${img.manifest.config.digest} lists ${diffIDs.length} diff_ids for ${img.layers.length} layers`)
    const converted = await Promise.all(img.layers.map(async (l, i) => await convertOnce(l, diffIDs[i])))
    const config = { ...img.config, rootfs: { ...img.config.rootfs, diff_ids: converted.map(l => l.diffID) } }
    const configDesc = await put(MediaType.OciConfig, json(config))
    const manifest: Manifest = {
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: configDesc,
      layers: converted.map(l => l.descriptor),
      ...(img.manifest.annotations != null ? { annotations: img.manifest.annotations } : {})
    }
    const extra: Partial<Descriptor> = {}
    if (img.descriptor.platform != null) extra.platform = img.descriptor.platform
    if (img.descriptor.annotations != null && resolution.indexes.length > 0) extra.annotations = img.descriptor.annotations
    const manifestDesc = await put(MediaType.OciManifest, json(manifest), extra)
    images.push({ manifest: manifestDesc, config: configDesc, platform: img.descriptor.platform, layers: converted })
  }

  let root: Descriptor
  if (resolution.indexes.length > 0) {
    const top = resolution.indexes[0].index
    const index: Index = {
      schemaVersion: 2,
      mediaType: MediaType.OciIndex,
      manifests: images.map(i => i.manifest),
      ...(top.annotations != null ? { annotations: top.annotations } : {})
    }
    root = await put(MediaType.OciIndex, json(index))
  } else {
    root = images[0].manifest
  }
  const indexJson = layoutIndexJson(root, tag)
  for (const p of publishers) await p.finish({ root, indexJson, name: options.name, tag, blobs }, signal)
  return { root, indexJson, images, blobs }
}
