import type { SegmentSink } from '../estargz/index.js'
import type { Descriptor } from '../oci/index.js'

/**
 * Produces a blob member by member into `sink` and resolves with its descriptor once the last
 * byte is out (the digest is only known then).
 */
export type SegmentProducer = (sink: SegmentSink) => Promise<Descriptor>

/** Where a published blob can be fetched from again, for the descriptor's `urls`. */
export interface PublishedBlob {
  urls: string[]
  /** Annotations for the blob's descriptor (what the publisher knows of where its parts are). */
  annotations?: Record<string, string>
}

/**
 * A place converted images go: the embedded IPFS node, an OCI layout directory, ... Blobs come
 * children first (layers, config, manifests, indexes), so a publisher that returns URLs has
 * them in the parents' JSON.
 */
export interface BlobPublisher {
  readonly name: string
  /** Stores a blob while it is produced (member-aligned for IPFS). */
  putSegments: (produce: SegmentProducer, signal?: AbortSignal) => Promise<PublishedBlob>
  /** Stores a small blob (config, manifest, index) held in memory. */
  putBytes: (desc: Descriptor, bytes: Uint8Array, signal?: AbortSignal) => Promise<PublishedBlob>
  /**
   * Records the image: `root` is the top-level index or manifest, `indexJson` the layout's
   * index.json (identical bytes for every publisher), `name` what the user called the source.
   */
  finish: (image: FinishedImage, signal?: AbortSignal) => Promise<void>
  /** Drops what an unfinished conversion stored (temp files); published content is left to GC. */
  abort: () => Promise<void>
}

export interface FinishedImage {
  root: Descriptor
  indexJson: Uint8Array
  name: string
  tag: string
  /** Every blob of the image, with the URLs each publisher returned. */
  blobs: Descriptor[]
}

/**
 * Runs `produce` once while every publisher stores its output: each publisher wraps the sink of
 * the next, so one pass over the layer feeds them all.
 */
export async function fanOutSegments (publishers: BlobPublisher[], produce: SegmentProducer, signal?: AbortSignal): Promise<{ desc: Descriptor, urls: string[], annotations: Record<string, string> }> {
  if (publishers.length === 0) {
    const desc = await produce(async () => {})
    return { desc, urls: [], annotations: {} }
  }
  const [first, ...rest] = publishers
  let inner: { desc: Descriptor, urls: string[], annotations: Record<string, string> } | undefined
  const published = await first.putSegments(async (sink) => {
    inner = await fanOutSegments(rest, async (next) => await produce(async (segment) => {
      await sink(segment)
      await next(segment)
    }), signal)
    return inner.desc
  }, signal)
  if (inner == null) throw new Error(`publisher ${first.name} did not run the producer`)
  return { desc: inner.desc, urls: [...published.urls, ...inner.urls], annotations: { ...inner.annotations, ...published.annotations } }
}
