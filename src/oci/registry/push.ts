/**
 * Pushes an image to a registry: blobs (skipped when already there), then manifests children
 * first, the root last and by tag.
 */
import type { Logger } from 'pino'
import { silentLogger } from '../../logging.js'
import { verifyStream } from '../digest.js'
import { DigestMismatchError, SizeMismatchError } from '../errors.js'
import { isForeignLayer, isManifestMediaType } from '../media-types.js'
import { formatImageReference, type RegistryReference } from '../reference.js'
import type { Resolution } from '../resolve.js'
import type { ImageReader } from '../image-reader.js'
import type { Descriptor } from '../types.js'
import { RegistryClient, type RegistryClientOptions } from './client.js'
import { Repository } from './repository.js'

export const DEFAULTS = {
  /** Blobs uploaded at once. */
  concurrency: 3,
  /** Attempts of a whole blob upload (a failed chunked upload restarts from POST). */
  uploadAttempts: 2
} as const

/** A blob to push; `open()` may be called more than once (retries). */
export interface PushBlob {
  descriptor: Descriptor
  open: () => AsyncIterable<Uint8Array>
}

/** A manifest or index to push, with its exact bytes. */
export interface PushManifest {
  descriptor: Descriptor
  bytes: Uint8Array
}

export interface PushImage {
  blobs: PushBlob[]
  /** Children first; the last one is the image root and is also tagged. */
  manifests: PushManifest[]
}

export interface PushOptions extends RegistryClientOptions {
  /** Reuse a client (and its tokens) instead of building one. */
  client?: RegistryClient
  concurrency?: number
  monolithicMaxBytes?: number
  chunkBytes?: number
  signal?: AbortSignal
  logger?: Logger
  /** Called after each blob is uploaded or found present. */
  onBlob?: (desc: Descriptor, uploaded: boolean) => void
}

export interface PushResult {
  /** Digest of the root manifest/index. */
  digest: string
  uploaded: string[]
  skipped: string[]
}

/**
 * Pushes `image` to `ref` (its tag, or only by digest when `ref` has a digest and no tag).
 * Every blob stream is verified against its descriptor while it is uploaded.
 */
export async function pushImage (ref: RegistryReference, image: PushImage, options: PushOptions = {}): Promise<PushResult> {
  const log = (options.logger ?? silentLogger()).child({ component: 'push', ref: formatImageReference(ref) })
  const client = options.client ?? new RegistryClient(ref.registry, { ...options, logger: options.logger })
  const repo = new Repository(client, ref.repository)
  const result: PushResult = { digest: '', uploaded: [], skipped: [] }
  // A blob shared by several images (a common base layer) is uploaded once.
  const queue = [...new Map(image.blobs.map(b => [b.descriptor.digest, b])).values()]

  const pushOne = async (b: PushBlob): Promise<void> => {
    const d = b.descriptor
    if (await repo.blobExists(d.digest, options.signal)) {
      result.skipped.push(d.digest)
      options.onBlob?.(d, false)
      return
    }
    for (let attempt = 1; ; attempt++) {
      try {
        await repo.uploadBlob(d, () => verifyStream(b.open(), d, 'push source'), options)
        break
      } catch (err) {
        if (attempt >= DEFAULTS.uploadAttempts || options.signal?.aborted === true || err instanceof DigestMismatchError || err instanceof SizeMismatchError) throw err
        log.warn({ digest: d.digest, err: (err as Error).message }, 'blob upload failed, restarting it')
      }
    }
    result.uploaded.push(d.digest)
    options.onBlob?.(d, true)
  }

  // A small worker pool; the first failure stops the others from taking new blobs.
  let next = 0
  let failed: unknown
  const workers = Array.from({ length: Math.max(1, options.concurrency ?? DEFAULTS.concurrency) }, async () => {
    while (failed == null && next < queue.length) {
      const b = queue[next++]
      try { await pushOne(b) } catch (err) { failed ??= err }
    }
  })
  await Promise.all(workers)
  if (failed != null) throw failed

  const manifests = image.manifests
  if (manifests.length === 0) throw new TypeError('pushImage: no manifests to push')
  for (const [i, m] of manifests.entries()) {
    const isRoot = i === manifests.length - 1
    const reference = isRoot && ref.tag != null ? ref.tag : m.descriptor.digest
    await repo.putManifest(reference, m.bytes, m.descriptor.mediaType, options.signal)
    log.debug({ reference, digest: m.descriptor.digest }, 'manifest pushed')
  }
  result.digest = manifests[manifests.length - 1].descriptor.digest
  return result
}

/**
 * What `pushImage` needs to copy a resolved image unchanged from `reader` (blobs streamed from
 * it, manifest bytes as they are). When a platform filter dropped some manifests of an index,
 * only the selected manifest is pushed and becomes the root.
 */
export function imageFromReader (reader: ImageReader, r: Resolution): PushImage {
  const blobs: PushBlob[] = []
  for (const img of r.images) {
    for (const d of [img.manifest.config, ...img.layers]) {
      if (isForeignLayer(d.mediaType) && (d.urls?.length ?? 0) > 0) continue // not distributable
      blobs.push({ descriptor: d, open: () => fetchLazily(reader, d) })
    }
  }
  const manifests: PushManifest[] = r.images.map(i => ({ descriptor: i.descriptor, bytes: i.manifestBytes }))
  const selected = new Set(r.images.map(i => i.descriptor.digest))
  const complete = r.indexes.every(x => x.index.manifests.every(m => !isManifestMediaType(m.mediaType) || selected.has(m.digest) || m.platform?.os === 'unknown'))
  if (r.indexes.length > 0 && complete) {
    for (const x of [...r.indexes].reverse()) manifests.push({ descriptor: x.descriptor, bytes: x.bytes })
  } else if (r.images.length > 1) {
    throw new TypeError('imageFromReader: a platform filter selected several manifests of an index; push them one by one')
  }
  return { blobs, manifests }
}

async function * fetchLazily (reader: ImageReader, d: Descriptor): AsyncGenerator<Uint8Array> {
  yield * await reader.fetch(d)
}
