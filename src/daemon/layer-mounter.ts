import type { ChunkCache, LayerFsOptions, MountManager } from '../fs/index.js'
import type { Logger } from '../logging.js'
import type { RemoteLayerMounter, RemoteLayerRef, RemoteMount } from '../snapshotter/index.js'
import { LABELS, type Labels } from '../wire/index.js'
import type { RangeSource } from '../source/types.js'

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
    const source = await this.components.openSource(layer.cid, signal)
    const components = { source, logger: log, cache }
    const options = { ...this.options, tocDigest, signal }
    const opened = await mounts.openLayer(components, options) // the signal ends the footer and TOC reads
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

  async check (mountpoint: string): Promise<void> {
    if (this.components.mounts.get(mountpoint) == null) throw new Error(`no lazy layer is mounted at ${mountpoint}`)
  }
}
