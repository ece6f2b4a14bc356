import type { ChunkCache, ChunkCacheStats, MountManager } from '../fs/index.js'
import type { FuseManagerClient, MountInfo } from '../fusemgr/index.js'
import type { OpenRepo } from '../ipfs/index.js'
import type { MirrorStats } from '../mirror/index.js'
import type { LearnedPrefetchStats } from '../prefetch-record/index.js'
import type { RemoteMetrics } from '../snapshotter/index.js'
import { bounded, type Health } from './http.js'
import { layerStatsOf, type LayerOrigins, type LayerStats, type TrackedLayerMounter } from './layer-stats.js'
import type { DaemonSnapshot } from './metrics.js'

/** Where the lazy mounts live: in the FUSE manager, or in the daemon itself. */
export type MountsAt =
  | { manager: FuseManagerClient }
  | { mounts: MountManager, tracked: TrackedLayerMounter, cache: ChunkCache }

export interface MonitoringComponents {
  repo: OpenRepo
  remote: RemoteMetrics
  origins: LayerOrigins
  mountsAt: MountsAt
  /** False once the daemon stops. */
  serving: () => boolean
  /** The learned prefetch's counters; undefined when it is off. */
  learned?: () => LearnedPrefetchStats | undefined
  /** The mirror's counters; undefined when the daemon serves no mirror. */
  mirror?: () => MirrorStats | undefined
}

/**
 * What the daemon reports about itself, read from its components when asked: the statistics of
 * each mounted layer (`stats`), a snapshot of every counter (/metrics), and its health (/healthz).
 */
export class Monitoring {
  constructor (private readonly components: MonitoringComponents) {}

  /** The mounted layers with their counters, sorted by mountpoint. */
  async layerStats (signal: AbortSignal): Promise<LayerStats[]> {
    return (await this.mounted(signal)).layers
  }

  async snapshot (signal: AbortSignal): Promise<DaemonSnapshot> {
    const { repo, remote } = this.components
    const node = repo.node
    const base = {
      fetch: node.fetchStats(),
      exchange: node.exchange.stats(),
      peers: node.exchange.peerStats(),
      connectedPeers: new Set(node.helia.libp2p.getConnections().map(c => c.remotePeer.toString())).size,
      remote,
      learned: this.components.learned?.(),
      mirror: this.components.mirror?.()
    }
    const at = this.components.mountsAt
    if ('manager' in at) {
      try {
        const [m, health] = await Promise.all([this.mounted(signal), bounded(at.manager.health(signal), signal)])
        return { ...base, ...m, cache: health.cache, fuseManagerUp: true }
      } catch {
        return { ...base, mounts: 0, layers: [], fuseManagerUp: false }
      }
    }
    return { ...base, ...await this.mounted(signal), cache: at.cache.stats() }
  }

  /** Healthy while the daemon serves and (with one) the FUSE manager answers in time. */
  async health (signal: AbortSignal): Promise<Health> {
    if (!this.components.serving()) return { ok: false, why: 'the daemon is stopping' }
    const at = this.components.mountsAt
    if ('manager' in at) {
      try {
        await bounded(at.manager.health(signal), signal)
      } catch (err) {
        return { ok: false, why: `the FUSE manager does not answer: ${(err as Error).message}` }
      }
    }
    return { ok: true }
  }

  private async mounted (signal: AbortSignal): Promise<{ mounts: number, layers: LayerStats[], cache?: ChunkCacheStats }> {
    const { origins, mountsAt: at } = this.components
    let infos: Array<Required<MountInfo>>
    let mounts: number
    if ('manager' in at) {
      const list = await bounded(at.manager.mounts(), signal)
      mounts = list.length
      infos = list.filter((m): m is Required<MountInfo> => m.stats != null)
    } else {
      mounts = at.mounts.list().length
      infos = at.mounts.list().flatMap(mountpoint => {
        const fs = at.mounts.get(mountpoint)?.fs
        const cid = at.tracked.layers.get(mountpoint)
        return fs != null && cid != null ? [{ mountpoint, cid, tocDigest: fs.estargz.tocDigest, bytesFetched: fs.stats().bytesFetched, stats: fs.stats() }] : []
      })
    }
    const layers = infos.map(m => layerStatsOf(m, origins.get(m.cid))).sort((a, b) => a.mountpoint.localeCompare(b.mountpoint))
    return { mounts, layers }
  }
}
