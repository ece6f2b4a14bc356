import type { Logger } from '../logging.js'
import type { RangeSource } from '../source/index.js'
import { LABELS, tocHintOf, type Labels, type TocHint } from '../wire/index.js'
import type { ChunkCache } from './cache.js'
import type { LayerFsOptions } from './layer.js'
import type { MountManager } from './mounts.js'

/** The layer a Prepare names, once resolved to IPFS. */
export interface RemoteLayerRef {
  cid: string
  /** compressed layer digest when the labels carry one */
  digest?: string
  /** TOC digest to verify against, when the labels carry one */
  tocDigest?: string
  /** how the CID was found */
  via: 'urls' | 'annotation' | 'digest-index' | 'stored'
}

/** Handle of one lazy mount. */
export interface RemoteMount {
  /** bytes this layer occupies locally (fetched/cached); reported by `Usage` */
  usage?: () => Promise<number>
}

/** A layer a pull is about to Prepare: enough to open it (footer and TOC) ahead. */
export interface WarmLayer {
  cid: string
  tocDigest: string
  /** The blob's size as its descriptor gives it: the open then needs no size request. */
  size?: number
  /** Where its TOC member is, when the layer's annotations say: the open skips the footer. */
  toc?: TocHint
}

/**
 * Mounts a layer lazily at a directory: {@link LayerMounter} in this process, the FUSE manager's
 * mounter through that process. The snapshotter calls `mount` on Prepare and on restart,
 * `unmount` on Remove/stop, and `check` (when present) before returning mounts that stack on the
 * layer. `mount` must reject promptly once `signal` aborts (the snapshotter's mount timeout). After a failed mount the snapshotter calls
 * `unmount` of that mountpoint: it must resolve only once nothing is mounted there and nothing
 * will be (a mount still in progress elsewhere, e.g. in the FUSE manager, is cancelled first),
 * and succeed when nothing was mounted.
 */
export interface RemoteLayerMounter {
  mount (mountpoint: string, labels: Labels, layer: RemoteLayerRef, signal?: AbortSignal): Promise<RemoteMount>
  unmount (mountpoint: string): Promise<void>
  /**
   * Opens these layers (footer and TOC) ahead of the Prepares a pull is about to send, all at
   * once, so each mount finds its TOC ready. Resolves when all are open or failed; a failure only
   * means the mount reads the TOC itself.
   */
  warm?: (layers: WarmLayer[], signal?: AbortSignal) => Promise<void>
  /**
   * Caches ranges of a layer (compressed blob offsets and lengths) in the order given, where the
   * layer's mounts read first: a prefetch record learned from a node that ran the image. True
   * when the mounter took them (the caching goes on without the caller); false or absent: the
   * caller prefetches into the blockstore instead.
   */
  prefetch?: (cid: string, ranges: Array<[number, number]>, signal?: AbortSignal) => Promise<boolean>
  /**
   * Throws when the mount is not healthy (the snapshotter then answers Unavailable); else
   * resolves once the layer is ready for a workload (its prioritized files, up to their timeout).
   */
  check?: (mountpoint: string) => Promise<void>
  /**
   * Mounts this mounter still serves from before the snapshotter (re)started: a mounter whose
   * mounts live in another process (the FUSE manager) keeps them across a daemon restart, so
   * containers on them keep working. start() keeps those that belong to remote snapshots
   * (their `mount` must then succeed without remounting) and unmounts the rest.
   */
  held?: () => Promise<string[]>
}

export interface LayerMounterComponents {
  logger: Logger
  mounts: MountManager
  cache: ChunkCache
  /** Opens the blob a CID names (through the Helia node). */
  openSource: (cid: string, signal?: AbortSignal) => Promise<RangeSource>
}

/** Per-layer options (prefetch, timeouts, verification policy) from the daemon configuration. */
export type LayerMounterOptions = Omit<LayerFsOptions, 'tocDigest' | 'signal'>

/**
 * Mounts one eStargz layer from IPFS at a directory through FUSE: the snapshotter's remote
 * mounter and the `mount` command's. The layer's TOC is checked against the digest the labels
 * (or the descriptor) carry; without one the mount is refused unless the configuration allows it.
 */
export class LayerMounter implements RemoteLayerMounter {
  constructor (private readonly components: LayerMounterComponents, private readonly options: LayerMounterOptions = {}) {}

  async mount (mountpoint: string, labels: Labels, layer: RemoteLayerRef, signal?: AbortSignal): Promise<RemoteMount> {
    const log = this.components.logger.child({ mountpoint, cid: layer.cid })
    const tocDigest = layer.tocDigest ?? labels[LABELS.tocDigest]
    const { mounts, cache } = this.components
    // the layer and its TOC leaf at once: each open is a round trip to a peer
    const hint = tocHintOf(labels)
    const [opening, hintOpening] = await Promise.allSettled([
      this.components.openSource(layer.cid, signal),
      hint != null ? this.components.openSource(hint.cid, signal) : Promise.resolve(undefined)
    ])
    const tocSource = hintOpening.status === 'fulfilled' ? hintOpening.value : undefined
    if (hintOpening.status === 'rejected') log.info({ err: (hintOpening.reason as Error).message }, 'the layer\'s TOC hint names a block that cannot be had; reading its footer')
    if (opening.status === 'rejected') {
      await tocSource?.close?.().catch(() => {})
      throw opening.reason
    }
    const source = opening.value
    const components = { source, logger: log, cache }
    const options = { ...this.options, tocDigest, signal }
    let opened
    try {
      // the signal ends the footer and TOC reads
      opened = await mounts.openLayer({ ...components, ...(hint != null && tocSource != null ? { tocMember: { offset: hint.offset, source: tocSource } } : {}) }, options)
    } finally {
      await tocSource?.close?.().catch(() => {})
    }
    if (signal?.aborted === true) {
      await opened.stop()
      await source.close?.().catch(() => {})
      signal.throwIfAborted()
    }
    // The prefetch and the FUSE mount take no signal: an abort stops the prefetch early, and the
    // mount that follows is undone before we reject, so nothing stays mounted after a rejection.
    const stopEarly = (): void => { void opened.stop() }
    signal?.addEventListener('abort', stopEarly, { once: true })
    let fs
    try {
      fs = await mounts.mountLayer(mountpoint, components, options, opened)
    } finally {
      signal?.removeEventListener('abort', stopEarly)
    }
    if (signal?.aborted === true) {
      await mounts.unmount(mountpoint)
      log.info('mount aborted by the caller after the FUSE mount: unmounted')
      signal.throwIfAborted()
    }
    log.info({ tocDigest: fs.estargz.tocDigest, via: layer.via }, 'layer mounted lazily')
    return { usage: async () => fs.stats().bytesFetched ?? 0 }
  }

  async unmount (mountpoint: string): Promise<void> {
    await this.components.mounts.unmount(mountpoint)
  }

  /** Throws when nothing is mounted there; else waits (up to the prefetch timeout) for the layer's prioritized files. */
  async check (mountpoint: string): Promise<void> {
    const active = this.components.mounts.get(mountpoint)
    if (active == null) throw new Error(`no lazy layer is mounted at ${mountpoint}`)
    await active.fs.waitForPrefetch()
  }
}
