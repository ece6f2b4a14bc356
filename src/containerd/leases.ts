import { fromTimestamp, type Empty, type Labels, type Timestamp } from '../wire/index.js'
import type { CallContext, CallOptions, Rpc } from './rpc.js'

export const DEFAULTS = {
  /** leases we create expire by themselves, so a crashed pull leaves nothing pinned for long */
  expireMs: 24 * 3600_000
}

/** containerd's lease label with the expiry time (RFC 3339) */
export const LEASE_EXPIRE_LABEL = 'containerd.io/gc.expire'

export interface Lease {
  id: string
  createdAt: Date
  labels: Labels
}

/** A resource a lease holds: `content` (a digest), `snapshots/<snapshotter>` (a key), `ingests` (a ref). */
export interface LeaseResource {
  id: string
  type: string
}

interface WireLease { id: string, createdAt: Timestamp | null, labels: Labels }

function fromWire (l: WireLease | null | undefined): Lease {
  return { id: l?.id ?? '', createdAt: fromTimestamp(l?.createdAt), labels: l?.labels ?? {} }
}

/**
 * containerd.services.leases.v1.Leases. Content and snapshots created by calls that carry a
 * lease (see ContainerdClient.withLease) are kept from garbage collection until it is deleted.
 */
export class LeasesClient {
  constructor (private readonly rpc: Rpc, private readonly ctx: CallContext) {}

  /** `id` defaults to a containerd-chosen one; `expireMs` (default 24 h, 0 = never) sets containerd.io/gc.expire. */
  async create (options: CallOptions & { id?: string, labels?: Labels, expireMs?: number } = {}): Promise<Lease> {
    const labels: Labels = { ...options.labels }
    const expire = options.expireMs ?? DEFAULTS.expireMs
    if (expire > 0) labels[LEASE_EXPIRE_LABEL] = new Date(Date.now() + expire).toISOString()
    const res = await this.rpc.unary<unknown, { lease: WireLease | null }>('leases', 'Create', { id: options.id ?? '', labels }, this.ctx, options.id ?? '(new)', options)
    return fromWire(res.lease)
  }

  /** `sync` waits for the garbage collection the delete triggers. */
  async delete (id: string, options: CallOptions & { sync?: boolean } = {}): Promise<void> {
    await this.rpc.unary<unknown, Empty>('leases', 'Delete', { id, sync: options.sync ?? false }, this.ctx, id, options)
  }

  async list (filters: string[] = [], options?: CallOptions): Promise<Lease[]> {
    const res = await this.rpc.unary<unknown, { leases: WireLease[] }>('leases', 'List', { filters }, this.ctx, filters.join(','), options)
    return res.leases.map(fromWire)
  }

  async addResource (id: string, resource: LeaseResource, options?: CallOptions): Promise<void> {
    await this.rpc.unary<unknown, Empty>('leases', 'AddResource', { id, resource }, this.ctx, `${id} ${resource.type}/${resource.id}`, options)
  }

  async deleteResource (id: string, resource: LeaseResource, options?: CallOptions): Promise<void> {
    await this.rpc.unary<unknown, Empty>('leases', 'DeleteResource', { id, resource }, this.ctx, `${id} ${resource.type}/${resource.id}`, options)
  }

  async listResources (id: string, options?: CallOptions): Promise<LeaseResource[]> {
    const res = await this.rpc.unary<unknown, { resources: LeaseResource[] }>('leases', 'ListResources', { id }, this.ctx, id, options)
    return res.resources.map(r => ({ id: r.id, type: r.type }))
  }
}
