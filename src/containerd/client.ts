import { ContentClient } from './content.js'
import { DiffClient } from './diff.js'
import { ImagesClient } from './images.js'
import { LeasesClient } from './leases.js'
import { NamespacesClient } from './namespaces.js'
import { Rpc, type CallContext } from './rpc.js'
import { SnapshotsClient } from './snapshots.js'

export const DEFAULTS = {
  /** containerd's default socket */
  address: '/run/containerd/containerd.sock',
  /** containerd's (and ctr's) default namespace */
  namespace: 'default',
  /** how long `ready()` waits for the socket to answer */
  connectTimeoutMs: 10_000
}

export interface ContainerdClientOptions {
  /** socket path (or `unix://` URL); default {@link DEFAULTS.address} */
  address?: string
  namespace?: string
}

/**
 * A typed client of containerd's gRPC API: content, images, leases, diff, snapshots (by
 * snapshotter name) and namespaces. `withNamespace`/`withLease` return views over the same
 * connection whose calls carry that namespace or lease; `close()` on the original closes it.
 */
export class ContainerdClient {
  readonly content: ContentClient
  readonly images: ImagesClient
  readonly leases: LeasesClient
  readonly diff: DiffClient
  readonly namespaces: NamespacesClient

  private constructor (private readonly rpc: Rpc, readonly context: CallContext, private readonly owner: boolean) {
    this.content = new ContentClient(rpc, context)
    this.images = new ImagesClient(rpc, context)
    this.leases = new LeasesClient(rpc, context)
    this.diff = new DiffClient(rpc, context)
    this.namespaces = new NamespacesClient(rpc, context)
  }

  /** Opens a connection lazily: the first call (or `ready()`) connects. */
  static create (options: ContainerdClientOptions = {}): ContainerdClient {
    return new ContainerdClient(new Rpc(options.address ?? DEFAULTS.address), { namespace: options.namespace ?? DEFAULTS.namespace }, true)
  }

  get address (): string { return this.rpc.address }
  get namespace (): string { return this.context.namespace }
  get lease (): string | undefined { return this.context.lease }

  snapshots (snapshotter: string): SnapshotsClient {
    return new SnapshotsClient(this.rpc, this.context, snapshotter)
  }

  withNamespace (namespace: string): ContainerdClient {
    return new ContainerdClient(this.rpc, { ...this.context, namespace }, false)
  }

  /** Calls through the returned client add what they create to the lease. */
  withLease (lease: string): ContainerdClient {
    return new ContainerdClient(this.rpc, { ...this.context, lease }, false)
  }

  /** Waits until containerd answers; UnavailableError (naming the socket) after `timeoutMs`. */
  async ready (timeoutMs = DEFAULTS.connectTimeoutMs): Promise<void> {
    await this.rpc.ready(timeoutMs)
  }

  close (): void {
    if (this.owner) this.rpc.close()
  }
}
