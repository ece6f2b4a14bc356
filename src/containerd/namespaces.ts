import type { Empty, Labels } from '../wire/index.js'
import type { CallContext, CallOptions, Rpc } from './rpc.js'

export interface Namespace {
  name: string
  labels: Labels
}

/** containerd.services.namespaces.v1.Namespaces. containerd creates a namespace on first use; this is for listing and cleanup. */
export class NamespacesClient {
  constructor (private readonly rpc: Rpc, private readonly ctx: CallContext) {}

  async get (name: string, options?: CallOptions): Promise<Namespace> {
    const res = await this.rpc.unary<unknown, { namespace: Namespace | null }>('namespaces', 'Get', { name }, this.ctx, name, options)
    return { name: res.namespace?.name ?? name, labels: res.namespace?.labels ?? {} }
  }

  async list (options?: CallOptions): Promise<Namespace[]> {
    const res = await this.rpc.unary<unknown, { namespaces: Namespace[] }>('namespaces', 'List', { filter: '' }, this.ctx, '', options)
    return res.namespaces.map(n => ({ name: n.name, labels: n.labels ?? {} }))
  }

  async create (name: string, labels: Labels = {}, options?: CallOptions): Promise<Namespace> {
    const res = await this.rpc.unary<unknown, { namespace: Namespace | null }>('namespaces', 'Create', { namespace: { name, labels } }, this.ctx, name, options)
    return { name: res.namespace?.name ?? name, labels: res.namespace?.labels ?? {} }
  }

  /** Fails with FailedPreconditionError while the namespace holds images, content or snapshots. */
  async delete (name: string, options?: CallOptions): Promise<void> {
    await this.rpc.unary<unknown, Empty>('namespaces', 'Delete', { name }, this.ctx, name, options)
  }
}
