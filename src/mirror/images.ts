import { LRUCache } from 'lru-cache'
import { CID } from 'multiformats/cid'
import { IpfsImageReader, type BlockFetchPath } from '../ipfs/index.js'
import { IPFS_NAME_PREFIX } from './names.js'
import { REF_NAME_ANNOTATION, resolveImages, type Descriptor } from '../oci/index.js'

/** What the registry API needs of the repo's index. */
export interface MirrorIndex {
  tags: { get: (name: string, tag: string) => string | undefined, hasName: (name: string) => boolean, rootsOf: (name: string) => string[] }
}

/** An image the registry API serves: its reader and every blob it references, by digest. */
export interface ImageView {
  root: CID
  reader: IpfsImageReader
  /** The image's root: the index or manifest `latest` names. */
  rootDesc: Descriptor
  /** Every descriptor under the root (indexes, manifests, configs, layers), by digest. */
  blobs: Map<string, Descriptor>
}


/**
 * Opens images by root CID through the node's fetch path (so a mirror that holds part of an
 * image fetches the rest from its peers), and keeps the last ones opened: a root CID names
 * immutable content, so a view never goes stale. A failed open is not kept.
 */
export class ImageViews {
  private readonly cache: LRUCache<string, Promise<ImageView>>

  constructor (private readonly blocks: BlockFetchPath, private readonly options: { maxEntries: number, openTimeoutMs: number }) {
    this.cache = new LRUCache({ max: options.maxEntries })
  }

  async open (root: CID): Promise<ImageView> {
    const key = root.toString()
    let p = this.cache.get(key)
    if (p == null) {
      // Bounded by its own timeout, not by one request's signal: the requests that wait for a
      // view share it, and one client going away must not fail the others.
      const opening = this.load(root, AbortSignal.timeout(this.options.openTimeoutMs))
      p = opening
      this.cache.set(key, opening)
      opening.catch(() => { if (this.cache.peek(key) === opening) this.cache.delete(key) })
    }
    return await p
  }

  private async load (root: CID, signal: AbortSignal): Promise<ImageView> {
    const reader = await IpfsImageReader.open(this.blocks, root, { signal })
    const r = await resolveImages(reader, { signal })
    const blobs = new Map<string, Descriptor>()
    blobs.set(r.root.digest, r.root)
    for (const x of r.indexes) {
      blobs.set(x.descriptor.digest, x.descriptor)
      for (const m of x.index.manifests) if (!blobs.has(m.digest)) blobs.set(m.digest, m)
    }
    for (const img of r.images) {
      blobs.set(img.descriptor.digest, img.descriptor)
      blobs.set(img.manifest.config.digest, img.manifest.config)
      for (const l of img.layers) blobs.set(l.digest, l)
    }
    return { root, reader, rootDesc: r.root, blobs }
  }
}

/** The root CID of `ipfs/<cid>`, or undefined for another name. */
export function cidOfName (name: string): CID | undefined {
  if (!name.startsWith(IPFS_NAME_PREFIX)) return undefined
  try {
    return CID.parse(name.slice(IPFS_NAME_PREFIX.length))
  } catch {
    return undefined
  }
}

/**
 * Whether `tag` names the root of a view reached as `ipfs/<cid>`: `latest`, or the tag the
 * layout's index.json records for it.
 */
export function isRootTag (view: ImageView, tag: string): boolean {
  return tag === 'latest' || view.rootDesc.annotations?.[REF_NAME_ANNOTATION] === tag
}
