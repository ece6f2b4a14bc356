import type { LearnedPrefetch } from '../prefetch-record/index.js'
import type { RemoteLayerMounter, RemoteLayerRef, RemoteMount, WarmLayer } from '../fs/index.js'
import type { Labels } from '../wire/index.js'

/**
 * The daemon's remote mounter with learned prefetch around it: a layer about to be used (warmed
 * by a pull, or mounted) starts learning (ask the peers for its record, prefetch in its order)
 * beside the mount, never in its way; when a layer's last mount goes, its recording closes.
 * Everything else is the wrapped mounter's, `warm`, `held` and `prefetch` present only when it has them.
 */
export class LearningLayerMounter implements RemoteLayerMounter {
  readonly warm?: (layers: WarmLayer[], signal?: AbortSignal) => Promise<void>
  readonly held?: () => Promise<string[]>
  readonly prefetch?: (cid: string, ranges: Array<[number, number]>, signal?: AbortSignal) => Promise<boolean>
  /** Mountpoint → layer CID, for the unmounts. */
  private readonly layers = new Map<string, string>()

  constructor (private readonly components: { inner: RemoteLayerMounter, learned: LearnedPrefetch }) {
    const { inner, learned } = components
    if (inner.warm != null) {
      const warm = inner.warm.bind(inner)
      this.warm = async (layers, signal) => {
        for (const l of layers) void learned.learn(l.cid)
        await warm(layers, signal)
      }
    }
    if (inner.held != null) this.held = inner.held.bind(inner)
    if (inner.prefetch != null) this.prefetch = inner.prefetch.bind(inner)
  }

  async mount (mountpoint: string, labels: Labels, layer: RemoteLayerRef, signal?: AbortSignal): Promise<RemoteMount> {
    void this.components.learned.learn(layer.cid)
    const mounted = await this.components.inner.mount(mountpoint, labels, layer, signal)
    this.layers.set(mountpoint, layer.cid)
    return mounted
  }

  async unmount (mountpoint: string): Promise<void> {
    await this.components.inner.unmount(mountpoint)
    const layer = this.layers.get(mountpoint)
    this.layers.delete(mountpoint)
    if (layer != null && ![...this.layers.values()].includes(layer)) this.components.learned.layerUnmounted(layer)
  }

  async check (mountpoint: string): Promise<void> {
    await this.components.inner.check?.(mountpoint)
  }
}
