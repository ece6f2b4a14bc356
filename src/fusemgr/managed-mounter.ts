import type { RemoteLayerMounter, RemoteLayerRef, RemoteMount, WarmLayer } from '../fs/index.js'
import type { Logger } from '../logging.js'
import { LABELS, tocHintOf, type Labels } from '../wire/index.js'
import type { FuseManagerClient, MountSettings } from './api.js'
import { deadline } from '../signals.js'
import { setMaxListeners } from 'node:events'

export interface ManagedLayerMounterOptions {
  /** Per-mount settings from the daemon's configuration. */
  settings?: MountSettings
  /** A warm call (footer and TOC of one layer) gives up after this long; the mount then reads them itself. */
  warmTimeoutMs: number
}

/**
 * The snapshotter's remote mounter when the lazy mounts live in the FUSE manager: each call is
 * one request to it. The mounts stay when the daemon stops, and `held()` lets the restarted
 * snapshotter keep the ones its remote snapshots still use. A mount the snapshotter gives up on
 * (its signal) is cancelled in the manager when the request's connection closes; `unmount` of
 * that mountpoint waits until the manager has undone it.
 */
export class ManagedLayerMounter implements RemoteLayerMounter {
  constructor (private readonly components: { client: FuseManagerClient, logger: Logger }, private readonly options: ManagedLayerMounterOptions) {}

  private get settings (): MountSettings {
    return this.options.settings ?? {}
  }

  async mount (mountpoint: string, labels: Labels, layer: RemoteLayerRef, signal?: AbortSignal): Promise<RemoteMount> {
    const { client, logger } = this.components
    const tocDigest = layer.tocDigest ?? labels[LABELS.tocDigest]
    const started = performance.now()
    const toc = tocHintOf(labels)
    const reply = await client.mount({ mountpoint, cid: layer.cid, ...(tocDigest != null ? { tocDigest } : {}), ...(toc != null ? { toc } : {}), settings: this.settings }, signal)
    const ms = Math.round(performance.now() - started)
    logger.info({ mountpoint, cid: layer.cid, tocDigest: reply.tocDigest, via: layer.via, kept: !reply.mounted, warm: reply.warm, ms, ...reply.timings },
      reply.mounted ? 'layer mounted lazily (FUSE manager)' : 'layer still mounted in the FUSE manager')
    return {
      usage: async () => (await client.mounts()).find(m => m.mountpoint === mountpoint)?.bytesFetched ?? 0
    }
  }

  /** Asks the manager to open every layer at once; failures are logged (the mount then reads its TOC itself). */
  async warm (layers: WarmLayer[], signal?: AbortSignal): Promise<void> {
    const { client, logger } = this.components
    const d = deadline(this.options.warmTimeoutMs, signal)
    setMaxListeners(Infinity, d.signal)
    const s = d.signal
    await Promise.all(layers.map(async (l) => {
      const started = performance.now()
      try {
        const r = await client.warm({ cid: l.cid, tocDigest: l.tocDigest, ...(l.size != null ? { size: l.size } : {}), ...(l.toc != null ? { toc: l.toc } : {}), settings: this.settings }, s)
        logger.debug({ cid: l.cid, opened: r.opened, ms: Math.round(performance.now() - started) }, 'layer opened ahead of its mount')
      } catch (err) {
        logger.debug({ cid: l.cid, err: (err as Error).message }, 'opening a layer ahead failed; its mount reads the TOC itself')
      }
    }))
  }

  /** Hands the ranges to the manager, whose chunk cache the mounts read first. */
  async prefetch (cid: string, ranges: Array<[number, number]>, signal?: AbortSignal): Promise<boolean> {
    try {
      const r = await this.components.client.prefetch({ cid, ranges }, signal)
      this.components.logger.debug({ cid, ranges: ranges.length, state: r.state }, 'recorded ranges handed to the FUSE manager')
      return true
    } catch (err) {
      this.components.logger.warn({ cid, err: (err as Error).message }, 'the FUSE manager did not take the recorded ranges; prefetching them into the blockstore')
      return false
    }
  }

  async unmount (mountpoint: string): Promise<void> {
    await this.components.client.unmount(mountpoint)
  }

  async check (mountpoint: string): Promise<void> {
    await this.components.client.check(mountpoint)
  }

  async held (): Promise<string[]> {
    return (await this.components.client.mounts()).map(m => m.mountpoint)
  }
}
