import { mkdtemp, open, rm } from 'node:fs/promises'
import { join } from 'node:path'
import {
  EstargzReader, Sha256, TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION, buildEstargz,
  type BlobSegment, type SegmentKind, type SegmentSink
} from '../estargz/index.js'
import { MediaType, layerCompression, type Descriptor, type ImageReader } from '../oci/index.js'
import type { Logger } from '../logging.js'
import { FileSource } from '../source/index.js'
import { fanOutSegments, type BlobPublisher } from './publisher.js'
import { openSourceLayer, type VerifiedLayer } from './source-layer.js'

export interface LayerOptions {
  chunkSize?: number
  compressionLevel?: number
  /** gzip members compressed at once per layer. */
  concurrency?: number
  tmpDir: string
  signal?: AbortSignal
  logger: Logger
  /** Called as the source layer's bytes are read. */
  onBytes?: (bytes: number) => void
  /**
   * Files to place first, in this order, followed by `.prefetch.landmark` (each must be in the
   * layer). The layer is then always rebuilt, even when it already is eStargz.
   */
  prioritizedFiles?: string[]
  /** Whether a layer that already is eStargz may be kept as is (default: always). */
  reusable?: (reader: EstargzReader) => boolean
}

export interface ConvertedLayer {
  /** The layer as it was in the source image. */
  source: Descriptor
  /** The eStargz layer: OCI gzip media type, TOC digest and uncompressed-size annotations, urls. */
  descriptor: Descriptor
  diffID: string
  tocDigest: string
  uncompressedSize: number
  /** True when the source layer already was eStargz with a valid TOC digest and was kept as is. */
  reused: boolean
  /** The layer's landmark: prioritized files before `.prefetch.landmark`, `.no.prefetch.landmark`, or none (a reused layer). */
  landmark: 'prefetch' | 'no-prefetch' | 'none'
}

/**
 * Converts one layer to eStargz while every publisher stores it, in one pass over the source.
 * The source layer is verified to its last byte (digest, size, diffID) inside the producer,
 * before the descriptor is returned: a publisher names a blob only once its producer returns.
 */
async function convert (source: ImageReader, desc: Descriptor, sourceDiffID: string | undefined, publishers: BlobPublisher[], opts: LayerOptions): Promise<ConvertedLayer> {
  let built: Awaited<ReturnType<typeof buildEstargz>> | undefined
  const { desc: out, urls, annotations: published } = await fanOutSegments(publishers, async (sink) => {
    const layer = await openSourceLayer(source, desc, { diffID: sourceDiffID, onCompressed: (chunk) => opts.onBytes?.(chunk.length), signal: opts.signal })
    const digest = new Sha256()
    let size = 0
    try {
      built = await buildEstargz(layer.tar, async (segment) => {
        digest.update(segment.bytes)
        size += segment.bytes.length
        await sink(segment)
      }, { compression: 'none', chunkSize: opts.chunkSize, compressionLevel: opts.compressionLevel, concurrency: opts.concurrency, signal: opts.signal, tmpDir: opts.tmpDir, prioritizedFiles: opts.prioritizedFiles })
    } catch (err) {
      throw await layer.fail(err)
    }
    await layer.finish()
    return {
      mediaType: MediaType.OciLayerGzip,
      digest: digest.digest(),
      size,
      annotations: {
        [TOC_DIGEST_ANNOTATION]: built.tocDigest,
        [UNCOMPRESSED_SIZE_ANNOTATION]: String(built.uncompressedSize)
      }
    }
  }, opts.signal)
  if (built == null) throw new Error('layer was not built')
  return {
    source: desc,
    descriptor: { ...out, annotations: { ...out.annotations, ...published }, ...(urls.length > 0 ? { urls } : {}) },
    diffID: built.diffID,
    tocDigest: built.tocDigest,
    uncompressedSize: built.uncompressedSize,
    reused: false,
    landmark: (opts.prioritizedFiles ?? []).length > 0 ? 'prefetch' : 'no-prefetch'
  }
}

/** Member boundaries of an existing eStargz blob, so it is published member-aligned too. */
function segmentsOf (reader: EstargzReader): Array<{ offset: number, kind: SegmentKind }> {
  const starts = new Map<number, SegmentKind>([[0, 'header']])
  for (const node of reader.nodes()) for (const c of node.chunks) starts.set(c.offset, 'data')
  starts.set(reader.tocOffset, 'toc')
  starts.set(reader.blobSize - reader.footerSize, 'footer')
  return [...starts.entries()].sort((a, b) => a[0] - b[0]).map(([offset, kind]) => ({ offset, kind }))
}

/**
 * Keeps a layer that already is eStargz: spooled to a temp file while it is verified (digest,
 * size, and the config's diffID over the decompressed bytes), opened with its annotated TOC
 * digest, then published as it is, cut at its gzip members. Returns undefined when it is not a
 * valid eStargz blob after all.
 */
async function reuse (source: ImageReader, desc: Descriptor, sourceDiffID: string, publishers: BlobPublisher[], opts: LayerOptions): Promise<ConvertedLayer | undefined> {
  const tocDigest = desc.annotations?.[TOC_DIGEST_ANNOTATION]
  if (tocDigest == null || layerCompression(desc.mediaType) !== 'gzip') return undefined
  const dir = await mkdtemp(join(opts.tmpDir, 'reuse-'))
  try {
    const path = join(dir, 'blob')
    const spool = await open(path, 'wx')
    let verified: VerifiedLayer
    try {
      const layer = await openSourceLayer(source, desc, {
        diffID: sourceDiffID,
        signal: opts.signal,
        onCompressed: async (chunk) => {
          opts.onBytes?.(chunk.length)
          let done = 0
          while (done < chunk.length) done += (await spool.write(chunk, done)).bytesWritten
        }
      })
      verified = await layer.finish()
    } finally {
      await spool.close()
    }
    const { diffID, uncompressedSize } = verified
    const file = await FileSource.open(path)
    let reader: EstargzReader
    try {
      reader = await EstargzReader.open(file.read.bind(file), await file.size(), { tocDigest, signal: opts.signal })
    } catch (err) {
      opts.logger.info({ layer: desc.digest, err: (err as Error).message }, 'layer carries a TOC digest but is not valid eStargz; converting it')
      return undefined
    } finally {
      await file.close()
    }
    if (opts.reusable != null && !opts.reusable(reader)) return undefined
    const landmark = reader.tree.prefetchOffset != null ? 'prefetch' : reader.tree.noPrefetch ? 'no-prefetch' : 'none'
    const bounds = segmentsOf(reader)
    const { urls, annotations: published } = await fanOutSegments(publishers, async (sink: SegmentSink) => {
      const fh = await open(path, 'r')
      try {
        for (let i = 0; i < bounds.length; i++) {
          const start = bounds[i].offset
          const end = i + 1 < bounds.length ? bounds[i + 1].offset : desc.size
          for (let at = start; at < end; at += 4 << 20) {
            const n = Math.min(4 << 20, end - at)
            const buf = Buffer.allocUnsafe(n)
            await fh.read(buf, 0, n, at)
            // a member larger than 4 MiB is handed over in pieces; only its first piece starts it
            const segment: BlobSegment = { kind: at === start ? bounds[i].kind : 'data', offset: at, bytes: buf }
            await sink(segment)
          }
        }
      } finally {
        await fh.close()
      }
      return { mediaType: MediaType.OciLayerGzip, digest: desc.digest, size: desc.size }
    }, opts.signal)
    const annotations = { ...desc.annotations, [TOC_DIGEST_ANNOTATION]: tocDigest, [UNCOMPRESSED_SIZE_ANNOTATION]: String(uncompressedSize), ...published }
    const descriptor: Descriptor = { mediaType: MediaType.OciLayerGzip, digest: desc.digest, size: desc.size, annotations }
    if (urls.length > 0) descriptor.urls = urls
    return { source: desc, descriptor, diffID, tocDigest, uncompressedSize, reused: true, landmark }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

/** Converts a layer to eStargz (or keeps it, when it already is) and publishes it. */
export async function convertLayer (source: ImageReader, desc: Descriptor, sourceDiffID: string | undefined, publishers: BlobPublisher[], opts: LayerOptions): Promise<ConvertedLayer> {
  if (sourceDiffID != null && (opts.prioritizedFiles ?? []).length === 0) {
    const kept = await reuse(source, desc, sourceDiffID, publishers, opts)
    if (kept != null) return kept
  }
  return await convert(source, desc, sourceDiffID, publishers, opts)
}
