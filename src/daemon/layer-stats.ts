import { resolve } from 'node:path'
import type { LayerFsStats, RemoteLayerMounter, RemoteLayerRef, RemoteMount } from '../fs/index.js'
import type { BlockFetch } from '../source/index.js'
import type { Labels } from '../wire/index.js'

/** Layer statistics defaults, in one place. */
export const DEFAULTS = {
  /** Layers (CIDs) whose block origins are kept; the least recently read go first. */
  maxTrackedLayers: 4096
} as const

/** Bytes of a layer's IPFS blocks by where the node found them. */
export interface BlockOrigins {
  /** Already in the local blockstore. */
  localBlockstore: number
  /** Fetched from peers or gateways (the node-wide split by stage and peer is in `stats`). */
  network: number
}

/**
 * The blocks each layer's reads used, by origin, counted as the node delivers them to the
 * layer's source (the FUSE manager's mounts read through the blob API, whose sources are
 * reopened after an eviction: their own counts would start again).
 */
export class LayerOrigins {
  private readonly byCid = new Map<string, BlockOrigins>()

  constructor (private readonly options: { maxLayers?: number } = {}) {}

  /** The `onBlock` of a layer's IpfsSource. */
  count (cid: string, fetch: BlockFetch): void {
    let o = this.byCid.get(cid)
    if (o != null) {
      this.byCid.delete(cid) // re-inserted last: the map's order is recency
    } else {
      o = { localBlockstore: 0, network: 0 }
      if (this.byCid.size >= (this.options.maxLayers ?? DEFAULTS.maxTrackedLayers)) this.byCid.delete(this.byCid.keys().next().value as string)
    }
    if (fetch.network) o.network += fetch.bytes
    else o.localBlockstore += fetch.bytes
    this.byCid.set(cid, o)
  }

  get (cid: string): BlockOrigins {
    return { ...(this.byCid.get(cid) ?? { localBlockstore: 0, network: 0 }) }
  }
}

/** The reader's counters a layer's statistics pass on as they are (documented in fs/chunk-reader.ts). */
type ReaderCounters = Pick<LayerFsStats, 'bytesServed' | 'cacheHits' | 'cacheMisses' | 'verificationFailures' | 'fetchTimeouts' | 'sourceErrors' | 'fetchMs'>

/** One mounted layer as `stats` and /metrics show it. */
export interface LayerStats extends ReaderCounters {
  mountpoint: string
  cid: string
  tocDigest: string
  /** Compressed bytes of the layer's file data (every chunk once). */
  sizeBytes: number
  /** Compressed bytes before `.prefetch.landmark`, fetched at mount. */
  prefetchSizeBytes: number
  /** Compressed bytes read from the node for this layer, by who wanted them. */
  fetched: { onDemand: number, prefetch: number, background: number, total: number }
  /** Where the bytes read came from: the chunk cache (file bytes), the node (its IPFS blocks). */
  from: { chunkCache: number } & BlockOrigins
  prefetchDone: boolean
  complete: boolean
}

/** A mounted layer's statistics from its LayerFs counters and the node's block origins. */
export function layerStatsOf (mount: { mountpoint: string, cid: string, tocDigest: string, stats: LayerFsStats }, origins: BlockOrigins): LayerStats {
  const s = mount.stats
  const f = s.fetchedBytes
  return {
    mountpoint: mount.mountpoint,
    cid: mount.cid,
    tocDigest: mount.tocDigest,
    sizeBytes: s.prefetch.totalBytes,
    prefetchSizeBytes: s.prefetch.prioritizedBytes,
    fetched: { onDemand: f.demand, prefetch: f.prefetch, background: f.background, total: s.bytesFetched },
    from: { chunkCache: s.cacheHitBytes, ...origins },
    bytesServed: s.bytesServed,
    cacheHits: s.cacheHits,
    cacheMisses: s.cacheMisses,
    verificationFailures: s.verificationFailures,
    fetchTimeouts: s.fetchTimeouts,
    sourceErrors: s.sourceErrors,
    fetchMs: s.fetchMs,
    prefetchDone: s.prefetch.prioritizedDone,
    complete: s.prefetch.complete
  }
}

/**
 * The in-process mounter with the layer each mountpoint holds remembered, so the daemon can
 * list its mounts' statistics as it lists the FUSE manager's (whose mount list names them).
 */
export class TrackedLayerMounter implements RemoteLayerMounter {
  readonly layers = new Map<string, string>()

  constructor (private readonly inner: RemoteLayerMounter) {}

  async mount (mountpoint: string, labels: Labels, layer: RemoteLayerRef, signal?: AbortSignal): Promise<RemoteMount> {
    const mounted = await this.inner.mount(mountpoint, labels, layer, signal)
    this.layers.set(resolve(mountpoint), layer.cid)
    return mounted
  }

  async unmount (mountpoint: string): Promise<void> {
    this.layers.delete(resolve(mountpoint))
    await this.inner.unmount(mountpoint)
  }

  async check (mountpoint: string): Promise<void> {
    await this.inner.check?.(mountpoint)
  }
}
