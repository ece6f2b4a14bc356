import { fromWireDescriptor, toWireDescriptor, type ContainerdDescriptor, type Mount, type WireDescriptor } from '../wire/index.js'
import type { CallContext, CallOptions, Rpc } from './rpc.js'

/** containerd.services.diff.v1.Diff: unpacks layer blobs from the content store onto mounts. */
export class DiffClient {
  constructor (private readonly rpc: Rpc, private readonly ctx: CallContext) {}

  /**
   * Applies the layer `desc` (which must be in the content store) onto `mounts` (what Prepare
   * returned). Returns the uncompressed tar's descriptor: its digest is the layer's diffID.
   */
  async apply (desc: ContainerdDescriptor, mounts: Mount[], options?: CallOptions): Promise<ContainerdDescriptor> {
    const res = await this.rpc.unary<unknown, { applied: WireDescriptor | null }>('diff', 'Apply',
      { diff: toWireDescriptor(desc), mounts, payloads: {} }, this.ctx, desc.digest, options)
    return fromWireDescriptor(res.applied)
  }
}
