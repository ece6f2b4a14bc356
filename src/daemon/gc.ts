import { CID } from 'multiformats/cid'
import type { Labels } from '../wire/index.js'
import type { RemoteLayerMounter, RemoteLayerRef, RemoteMount, WarmLayer } from '../fs/index.js'
import { lowWater, type ChunkGcReport, type OpenRepo } from '../ipfs/index.js'
import type { Logger } from '../logging.js'

/**
 * A mounter that remembers which layer (CID) is mounted where: the layers mounted now are roots
 * of every garbage collection, so their stored blocks stay. A daemon that restarts mounts the
 * remote snapshots again (or keeps the FUSE manager's), through here, so the list is rebuilt.
 */
export class MountedLayers implements RemoteLayerMounter {
  private readonly byMountpoint = new Map<string, string>()
  readonly warm?: RemoteLayerMounter['warm']
  readonly prefetch?: RemoteLayerMounter['prefetch']
  readonly check?: RemoteLayerMounter['check']
  readonly held?: RemoteLayerMounter['held']

  constructor (private readonly inner: RemoteLayerMounter) {
    if (inner.warm != null) this.warm = async (layers: WarmLayer[], signal?: AbortSignal) => { await inner.warm?.(layers, signal) }
    if (inner.prefetch != null) this.prefetch = async (cid, ranges, signal) => await (inner.prefetch?.(cid, ranges, signal) ?? false)
    if (inner.check != null) this.check = async (mp) => { await inner.check?.(mp) }
    if (inner.held != null) this.held = async () => await (inner.held?.() ?? [])
  }

  async mount (mountpoint: string, labels: Labels, layer: RemoteLayerRef, signal?: AbortSignal): Promise<RemoteMount> {
    // held from the start: a collection during the mount must not take the blocks it reads
    this.byMountpoint.set(mountpoint, layer.cid)
    try {
      return await this.inner.mount(mountpoint, labels, layer, signal)
    } catch (err) {
      this.byMountpoint.delete(mountpoint)
      throw err
    }
  }

  async unmount (mountpoint: string): Promise<void> {
    await this.inner.unmount(mountpoint)
    this.byMountpoint.delete(mountpoint)
  }

  /** The CIDs of the layers mounted (or being mounted) now. */
  cids (): CID[] {
    const out = new Map<string, CID>()
    for (const cid of this.byMountpoint.values()) {
      try {
        out.set(cid, CID.parse(cid))
      } catch { /* the mount itself refuses a bad CID */ }
    }
    return [...out.values()]
  }
}

export interface AutoGcOptions {
  /** The blockstore's cap in bytes (0: none). */
  maxBlocksBytes: number
  intervalMs: number
}

/**
 * Collects on its own when the blockstore passes its cap: every `intervalMs` it compares the
 * size the last collection measured plus the bytes written since (an estimate from above: a
 * block written twice counts twice) with the cap, and when it is over, collects down to
 * `lowWater(cap)`, least recently used unpinned blocks first. The first check measures. The
 * chunk cache keeps its own cap (`[fs] disk_cache_bytes`) as it writes.
 */
export class AutoGc {
  private timer?: NodeJS.Timeout
  private measured?: number
  private running?: Promise<void>
  private stuck = false
  private changesAtRun = -1
  private readonly log: Logger

  constructor (private readonly components: { repo: OpenRepo, logger: Logger }, private readonly options: AutoGcOptions) {
    this.log = components.logger.child({ component: 'auto-gc' })
  }

  start (): void {
    if (this.options.maxBlocksBytes <= 0) return
    this.timer = setInterval(() => { void this.check() }, this.options.intervalMs)
    this.timer.unref()
    void this.check()
  }

  stop (): void {
    if (this.timer != null) clearInterval(this.timer)
    this.timer = undefined
  }

  /** One check (and a collection when over the cap); resolves when done. */
  async check (): Promise<void> {
    this.running ??= this.checkOnce().catch((err: Error) => {
      this.log.error({ err: err.message }, 'automatic garbage collection failed')
    }).finally(() => { this.running = undefined })
    await this.running
  }

  private async checkOnce (): Promise<void> {
    const { collector } = this.components.repo
    const cap = this.options.maxBlocksBytes
    if (this.measured != null && this.measured + collector.guard.writtenBytes <= cap) return
    // over the cap with nothing evictable: only a write or an unpin can change that
    if (this.stuck && collector.guard.changes === this.changesAtRun) return
    this.changesAtRun = collector.guard.changes
    const r = await collector.run({ targetBytes: lowWater(cap) })
    this.measured = r.bytes - r.freedBytes
    if (r.freedBlocks > 0) this.log.info({ freedBlocks: r.freedBlocks, freedBytes: r.freedBytes, bytes: this.measured, cap }, 'blockstore over its cap: evicted unpinned blocks')
    // once, until it changes: every check finds the same
    const stuck = this.measured > lowWater(cap)
    if (stuck && !this.stuck) this.log.warn({ bytes: this.measured, cap }, 'pinned and mounted data alone exceed the blockstore cap ([ipfs] max_blocks_bytes): nothing more can be evicted')
    this.stuck = stuck
    // blocks held by work in progress are free to go once it ends: check again next time
    if (r.heldBlocks > 0) this.changesAtRun = -1
  }
}

/** The chunk collector of a daemon: the FUSE manager's (over its API) or its own cache's. */
export type ChunkCollector = (options: { dryRun?: boolean, signal?: AbortSignal }) => Promise<ChunkGcReport>
