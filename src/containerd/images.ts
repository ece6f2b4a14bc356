import { fromTimestamp, fromWireDescriptor, toWireDescriptor, type ContainerdDescriptor, type Empty, type Labels, type WireDescriptor, type Timestamp } from '../wire/index.js'
import type { CallContext, CallOptions, Rpc } from './rpc.js'
import { isAlreadyExists } from './errors.js'

/** An image record: a name pointing at a root descriptor (index or manifest) in the content store. */
export interface ImageRecord {
  name: string
  labels: Labels
  target: ContainerdDescriptor
  createdAt?: Date
  updatedAt?: Date
}

interface WireImage { name: string, labels: Labels, target: WireDescriptor | null, createdAt?: Timestamp | null, updatedAt?: Timestamp | null }

function toWire (img: ImageRecord): WireImage {
  return { name: img.name, labels: img.labels, target: toWireDescriptor(img.target) }
}

function fromWire (img: WireImage | null | undefined): ImageRecord {
  return {
    name: img?.name ?? '',
    labels: img?.labels ?? {},
    target: fromWireDescriptor(img?.target),
    createdAt: fromTimestamp(img?.createdAt),
    updatedAt: fromTimestamp(img?.updatedAt)
  }
}

/** containerd.services.images.v1.Images: named image records (what `ctr images ls` shows). */
export class ImagesClient {
  constructor (private readonly rpc: Rpc, private readonly ctx: CallContext) {}

  async get (name: string, options?: CallOptions): Promise<ImageRecord> {
    const res = await this.rpc.unary<{ name: string }, { image: WireImage | null }>('images', 'Get', { name }, this.ctx, name, options)
    return fromWire(res.image)
  }

  /** `filters` use containerd's filter syntax, e.g. `name==ipfs://bafy…`. */
  async list (filters: string[] = [], options?: CallOptions): Promise<ImageRecord[]> {
    const res = await this.rpc.unary<{ filters: string[] }, { images: WireImage[] }>('images', 'List', { filters }, this.ctx, filters.join(','), options)
    return res.images.map(fromWire)
  }

  /** Fails with AlreadyExistsError when the name is taken. */
  async create (image: ImageRecord, options?: CallOptions): Promise<ImageRecord> {
    const res = await this.rpc.unary<{ image: WireImage }, { image: WireImage | null }>('images', 'Create', { image: toWire(image) }, this.ctx, image.name, options)
    return fromWire(res.image)
  }

  /** `fields`: `target`, `labels`, `labels.<key>`; empty updates target and labels. */
  async update (image: ImageRecord, fields: string[] = [], options?: CallOptions): Promise<ImageRecord> {
    const res = await this.rpc.unary<unknown, { image: WireImage | null }>('images', 'Update',
      { image: toWire(image), updateMask: fields.length > 0 ? { paths: fields } : null }, this.ctx, image.name, options)
    return fromWire(res.image)
  }

  /** Creates the record, or points the existing one at the new target (what `ctr pull` does). */
  async upsert (image: ImageRecord, options?: CallOptions): Promise<ImageRecord> {
    try {
      return await this.create(image, options)
    } catch (err) {
      if (!isAlreadyExists(err)) throw err
      return await this.update(image, ['target', 'labels'], options)
    }
  }

  /** `sync` waits for the garbage collection the delete triggers. */
  async delete (name: string, options: CallOptions & { sync?: boolean } = {}): Promise<void> {
    await this.rpc.unary<{ name: string, sync: boolean }, Empty>('images', 'Delete', { name, sync: options.sync ?? false }, this.ctx, name, options)
  }
}
