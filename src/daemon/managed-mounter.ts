import type { FuseManagerClient, MountSettings } from '../fusemgr/index.js'
import type { Logger } from '../logging.js'
import type { Labels, RemoteLayerMounter, RemoteLayerRef, RemoteMount } from '../snapshotter/index.js'
import { LABELS } from '../snapshotter/index.js'

/**
 * The snapshotter's remote mounter when the lazy mounts live in the FUSE manager: each call is
 * one request to it. The mounts stay when the daemon stops, and `held()` lets the restarted
 * snapshotter keep the ones its remote snapshots still use.
 */
export class ManagedLayerMounter implements RemoteLayerMounter {
  constructor (private readonly components: { client: FuseManagerClient, logger: Logger }, private readonly settings: MountSettings = {}) {}

  async mount (mountpoint: string, labels: Labels, layer: RemoteLayerRef, signal?: AbortSignal): Promise<RemoteMount> {
    const { client, logger } = this.components
    const tocDigest = layer.tocDigest ?? labels[LABELS.tocDigest]
    const reply = await client.mount({ mountpoint, cid: layer.cid, ...(tocDigest != null ? { tocDigest } : {}), settings: this.settings }, signal)
    logger.info({ mountpoint, cid: layer.cid, tocDigest: reply.tocDigest, via: layer.via, kept: !reply.mounted }, reply.mounted ? 'layer mounted lazily (FUSE manager)' : 'layer still mounted in the FUSE manager')
    return {
      usage: async () => (await client.mounts()).find(m => m.mountpoint === mountpoint)?.bytesFetched ?? 0
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
