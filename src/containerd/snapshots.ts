import { fromTimestamp, type Empty, type Labels, type Mount, type Timestamp } from '../wire/index.js'
import type { CallContext, CallOptions, Rpc } from './rpc.js'

export type SnapshotKind = 'view' | 'active' | 'committed' | 'unknown'

export interface SnapshotInfo {
  name: string
  parent: string
  kind: SnapshotKind
  createdAt: Date
  updatedAt: Date
  labels: Labels
}

interface WireInfo { name: string, parent: string, kind: string, createdAt: Timestamp | null, updatedAt: Timestamp | null, labels: Labels }

function fromWire (i: WireInfo | null | undefined): SnapshotInfo {
  const kind = (i?.kind ?? 'UNKNOWN').toLowerCase()
  return {
    name: i?.name ?? '',
    parent: i?.parent ?? '',
    kind: kind === 'view' || kind === 'active' || kind === 'committed' ? kind : 'unknown',
    createdAt: fromTimestamp(i?.createdAt),
    updatedAt: fromTimestamp(i?.updatedAt),
    labels: i?.labels ?? {}
  }
}

/**
 * containerd.services.snapshots.v1.Snapshots through containerd (not the proxy socket): every
 * request names the snapshotter, and containerd's metadata layer adds namespaces, leases and GC
 * on top of the snapshotter's own keys.
 */
export class SnapshotsClient {
  constructor (private readonly rpc: Rpc, private readonly ctx: CallContext, readonly snapshotter: string) {}

  /** An active snapshot on `parent`; for a remote snapshotter AlreadyExistsError means "committed remotely". */
  async prepare (key: string, parent: string, labels: Labels = {}, options?: CallOptions): Promise<Mount[]> {
    const res = await this.rpc.unary<unknown, { mounts: Mount[] }>('snapshots', 'Prepare', { snapshotter: this.snapshotter, key, parent, labels }, this.ctx, `${this.snapshotter} ${key}`, options)
    return res.mounts
  }

  async view (key: string, parent: string, labels: Labels = {}, options?: CallOptions): Promise<Mount[]> {
    const res = await this.rpc.unary<unknown, { mounts: Mount[] }>('snapshots', 'View', { snapshotter: this.snapshotter, key, parent, labels }, this.ctx, `${this.snapshotter} ${key}`, options)
    return res.mounts
  }

  async mounts (key: string, options?: CallOptions): Promise<Mount[]> {
    const res = await this.rpc.unary<unknown, { mounts: Mount[] }>('snapshots', 'Mounts', { snapshotter: this.snapshotter, key }, this.ctx, `${this.snapshotter} ${key}`, options)
    return res.mounts
  }

  async commit (name: string, key: string, labels: Labels = {}, options?: CallOptions): Promise<void> {
    await this.rpc.unary<unknown, Empty>('snapshots', 'Commit', { snapshotter: this.snapshotter, name, key, labels }, this.ctx, `${this.snapshotter} ${key} → ${name}`, options)
  }

  async remove (key: string, options?: CallOptions): Promise<void> {
    await this.rpc.unary<unknown, Empty>('snapshots', 'Remove', { snapshotter: this.snapshotter, key }, this.ctx, `${this.snapshotter} ${key}`, options)
  }

  async stat (key: string, options?: CallOptions): Promise<SnapshotInfo> {
    const res = await this.rpc.unary<unknown, { info: WireInfo | null }>('snapshots', 'Stat', { snapshotter: this.snapshotter, key }, this.ctx, `${this.snapshotter} ${key}`, options)
    return fromWire(res.info)
  }

  /** `fields`: `labels.<key>` paths; default: the given labels. */
  async update (name: string, labels: Labels, fields?: string[], options?: CallOptions): Promise<SnapshotInfo> {
    const paths = fields ?? Object.keys(labels).map(k => `labels.${k}`)
    const res = await this.rpc.unary<unknown, { info: WireInfo | null }>('snapshots', 'Update',
      { snapshotter: this.snapshotter, info: { name, labels }, updateMask: { paths } }, this.ctx, `${this.snapshotter} ${name}`, options)
    return fromWire(res.info)
  }

  async * list (filters: string[] = [], options?: CallOptions): AsyncGenerator<SnapshotInfo> {
    for await (const msg of this.rpc.serverStream<unknown, { info: WireInfo[] }>('snapshots', 'List', { snapshotter: this.snapshotter, filters }, this.ctx, this.snapshotter, options)) {
      for (const i of msg.info) yield fromWire(i)
    }
  }

  async usage (key: string, options?: CallOptions): Promise<{ size: number, inodes: number }> {
    const res = await this.rpc.unary<unknown, { size: string, inodes: string }>('snapshots', 'Usage', { snapshotter: this.snapshotter, key }, this.ctx, `${this.snapshotter} ${key}`, options)
    return { size: Number(res.size), inodes: Number(res.inodes) }
  }
}
