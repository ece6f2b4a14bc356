import type { CID } from 'multiformats/cid'
import { isAbortError } from '../errors.js'
import { InvalidOptionError, walkDag, type IndexStore } from '../ipfs/index.js'
import type { Logger } from '../logging.js'
import { readCar, type ReaderLimits } from './car-reader.js'
import { checkedBlocks, checkImages } from './check.js'
import { BundleError, BundleIncompleteError, BundleNotAnImageError } from './errors.js'
import { Staging, type CommitTarget } from './staging.js'

/** What an import works on: the repo's folder, its blockstore and its index. */
export interface ImportComponents {
  /** The repo's folder (staging happens under it, on the blockstore's filesystem). */
  repo: string
  /** The repo's local blockstore (never the network). */
  store: CommitTarget
  index: IndexStore
  logger: Logger
}

export interface BundleProgress {
  phase: 'read' | 'check' | 'commit' | 'write'
  blocks: number
  bytes: number
}

export interface ImportOptions {
  /** The name the image is listed under (one image only); default `ipfs://<root>`. */
  name?: string
  signal?: AbortSignal
  limits?: Partial<ReaderLimits>
  onProgress?: (p: BundleProgress) => void
}

export interface ImportedImage {
  root: string
  name: string
  descriptor?: string
  /** Blobs whose digest→CID mapping was recorded (each checked against its digest). */
  blobs: number
  size?: number
  /** The image was listed already: its record is left as it was. */
  existing: boolean
}

export interface ImportResult {
  images: ImportedImage[]
  /** Distinct blocks in the bundle, and their bytes. */
  blocks: number
  bytes: number
  /** Blocks the repo did not hold before. */
  added: number
  /** Blocks of the bundle no root reaches: checked, then dropped (never stored). */
  ignored: number
}

/**
 * Imports a bundle (a CARv1 stream of one or more images, see `exportBundle`):
 *
 * 1. every block is checked against its CID as it is read and staged in a private folder under
 *    the repo; nothing in it is served or listed;
 * 2. from each root, the DAG must be complete in the bundle itself (BundleIncompleteError), and
 *    each root must be an image whose every blob hashes to its digest (`checkImages`);
 * 3. only then are the blocks the roots reach written into the blockstore (blocks no root
 *    reaches are dropped), and each image is pinned and listed with its digest→CID mappings.
 *
 * A refused bundle leaves the repo as it was: same images, same blocks. An import killed before
 * step 3 leaves only its staging folder, which the next import removes; killed during step 3,
 * it leaves checked blocks that no image lists or pins (a GC drops them).
 */
export async function importBundle (components: ImportComponents, source: AsyncIterable<Uint8Array>, options: ImportOptions = {}): Promise<ImportResult> {
  const { signal } = options
  const log = components.logger.child({ component: 'bundle-import' })
  const staging = await Staging.create(components.repo, log)
  const ms: Record<string, number> = {}
  let t = Date.now()
  const lap = (phase: string): void => { const now = Date.now(); ms[phase] = now - t; t = now }
  try {
    const car = await readCar(source, { signal, limits: options.limits })
    if (car.roots.length === 0) throw new BundleNotAnImageError('the bundle names no root')
    let read = 0
    for await (const b of car.blocks) {
      await staging.put(b.cid, b.bytes)
      if (++read % 256 === 0) options.onProgress?.({ phase: 'read', blocks: staging.count, bytes: staging.bytes })
    }
    await staging.flush()
    options.onProgress?.({ phase: 'read', blocks: staging.count, bytes: staging.bytes })
    lap('read')

    // Complete from every root, in the bundle alone.
    const reachable = new Map<string, CID>()
    const seen = new Set<string>()
    let current = ''
    for (const root of car.roots) {
      current = root.toString()
      const missing = (cid: CID): Error => new BundleIncompleteError(current, cid.toString())
      try {
        for await (const b of walkDag(root, async (cid) => {
          if (!staging.has(cid)) throw missing(cid)
          return await staging.get(cid)
        }, { signal, seen, has: async (cid) => staging.has(cid), missing })) reachable.set(b.cid.toString(), b.cid)
      } catch (err) {
        if (err instanceof BundleError || isAbortError(err)) throw err
        throw new BundleNotAnImageError(`root ${current}: ${(err as Error).message}`, { cause: err })
      }
    }
    lap('walk')
    options.onProgress?.({ phase: 'check', blocks: reachable.size, bytes: staging.bytes })
    const images = await checkImages(checkedBlocks(() => current, seen, async (cid) => await staging.get(cid)), car.roots, { signal, name: options.name })
    if (options.name != null && images.length > 1) throw new InvalidOptionError(`a name names one image, and the bundle holds ${images.length}`)

    lap('check')
    // Commit: blocks into the store, then each image pinned and listed.
    options.onProgress?.({ phase: 'commit', blocks: reachable.size, bytes: staging.bytes })
    const added = await staging.commit(reachable.values(), components.store, log, signal)
    lap('commit')
    const listed: string[] = []
    const out: ImportedImage[] = []
    try {
      for (const img of images) {
        const existing = components.index.images.get(img.record.root)
        if (existing == null) {
          await components.index.images.add(img.record, { digests: img.digests, signal })
          listed.push(img.record.root)
        }
        const r = existing ?? img.record
        out.push({ root: r.root, name: r.name, descriptor: r.descriptor ?? img.record.descriptor, blobs: img.digests.length, size: r.size, existing: existing != null })
      }
    } catch (err) {
      for (const root of listed) await components.index.images.remove(root).catch(() => {})
      await Staging.uncommit(added, components.store, log)
      throw err
    }
    lap('list')
    log.info({ images: out.map(i => i.root), blocks: reachable.size, added: added.length, ignored: staging.count - reachable.size, ms }, 'bundle imported')
    return { images: out, blocks: staging.count, bytes: staging.bytes, added: added.length, ignored: staging.count - reachable.size }
  } finally {
    await staging.remove()
  }
}
