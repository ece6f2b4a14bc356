import { randomBytes } from 'node:crypto'
import { fromTimestamp, type Empty, type Labels, type Timestamp } from '../wire/index.js'
import { ContentOffsetMismatchError, isAlreadyExists, isNotFound } from './errors.js'
import type { CallContext, CallOptions, Rpc } from './rpc.js'

export const DEFAULTS = {
  /** bytes per Write message (containerd's remote writer also sends ≤ 1 MiB) */
  writeChunkSize: 1 << 20
}

export interface ContentInfo {
  digest: string
  size: number
  createdAt: Date
  updatedAt: Date
  labels: Labels
}

/** An upload in progress (an "ingest"), by its ref. */
export interface WriteStatus {
  ref: string
  offset: number
  total: number
  expected: string
  startedAt: Date
  updatedAt: Date
}

export interface WriteOptions extends CallOptions {
  /** the digest and size the bytes must have: containerd refuses the commit otherwise */
  expected: { digest: string, size: number }
  /** labels set on the blob at commit (GC references, containerd.io/uncompressed, ...) */
  labels?: Labels
  /** ingest ref; default a random one. The same ref resumes an interrupted upload. */
  ref?: string
}

export interface WriteResult {
  digest: string
  size: number
  /** bytes sent to containerd (0 when the blob was already there) */
  written: number
  /** the blob was already in the store: nothing was sent and the labels were not applied */
  existed: boolean
}

interface WireInfo { digest: string, size: string, createdAt: Timestamp | null, updatedAt: Timestamp | null, labels: Labels }
interface WireStatus { ref: string, offset: string, total: string, expected: string, startedAt: Timestamp | null, updatedAt: Timestamp | null }
type WriteAction = 'STAT' | 'WRITE' | 'COMMIT'
interface WireWriteRequest { action: WriteAction, ref: string, total?: string, expected?: string, offset?: string, data?: Uint8Array, labels?: Labels }
interface WireWriteResponse { action: WriteAction, offset: string, total: string, digest: string }

function toInfo (i: WireInfo | null | undefined): ContentInfo {
  return { digest: i?.digest ?? '', size: Number(i?.size ?? 0), createdAt: fromTimestamp(i?.createdAt), updatedAt: fromTimestamp(i?.updatedAt), labels: i?.labels ?? {} }
}

/** containerd.services.content.v1.Content: the blob store, with labels that drive its GC. */
export class ContentClient {
  constructor (private readonly rpc: Rpc, private readonly ctx: CallContext) {}

  async info (digest: string, options?: CallOptions): Promise<ContentInfo> {
    const res = await this.rpc.unary<{ digest: string }, { info: WireInfo | null }>('content', 'Info', { digest }, this.ctx, digest, options)
    return toInfo(res.info)
  }

  /** True when the blob is in the store (visible in this namespace). */
  async has (digest: string, options?: CallOptions): Promise<boolean> {
    try {
      await this.info(digest, options)
      return true
    } catch (err) {
      if (isNotFound(err)) return false
      throw err
    }
  }

  /**
   * Sets labels on a blob. `fields` are update-mask paths (`labels.<key>`); by default exactly
   * the given labels are set and the others kept. An empty value removes a label.
   */
  async update (digest: string, labels: Labels, fields?: string[], options?: CallOptions): Promise<ContentInfo> {
    const paths = fields ?? Object.keys(labels).map(k => `labels.${k}`)
    const res = await this.rpc.unary<unknown, { info: WireInfo | null }>('content', 'Update',
      { info: { digest, labels }, updateMask: { paths } }, this.ctx, digest, options)
    return toInfo(res.info)
  }

  async delete (digest: string, options?: CallOptions): Promise<void> {
    await this.rpc.unary<{ digest: string }, Empty>('content', 'Delete', { digest }, this.ctx, digest, options)
  }

  /** Streams a blob (from `offset`, `size` bytes; 0 = to the end). */
  async * read (digest: string, options: CallOptions & { offset?: number, size?: number } = {}): AsyncGenerator<Uint8Array> {
    const req = { digest, offset: String(options.offset ?? 0), size: String(options.size ?? 0) }
    for await (const msg of this.rpc.serverStream<typeof req, { offset: string, data: Uint8Array }>('content', 'Read', req, this.ctx, digest, options)) {
      if (msg.data.length > 0) yield msg.data
    }
  }

  async readAll (digest: string, options: CallOptions & { offset?: number, size?: number } = {}): Promise<Uint8Array> {
    const parts: Uint8Array[] = []
    for await (const p of this.read(digest, options)) parts.push(p)
    return Buffer.concat(parts)
  }

  async status (ref: string, options?: CallOptions): Promise<WriteStatus> {
    const res = await this.rpc.unary<{ ref: string }, { status: WireStatus | null }>('content', 'Status', { ref }, this.ctx, `ref ${ref}`, options)
    const s = res.status
    return {
      ref: s?.ref ?? ref,
      offset: Number(s?.offset ?? 0),
      total: Number(s?.total ?? 0),
      expected: s?.expected ?? '',
      startedAt: fromTimestamp(s?.startedAt),
      updatedAt: fromTimestamp(s?.updatedAt)
    }
  }

  /** Drops an upload in progress. */
  async abort (ref: string, options?: CallOptions): Promise<void> {
    await this.rpc.unary<{ ref: string }, Empty>('content', 'Abort', { ref }, this.ctx, `ref ${ref}`, options)
  }

  /**
   * Uploads a blob with containerd's Write protocol: a STAT opens (or resumes) the ingest named
   * `ref`, WRITEs append at the current offset, and a COMMIT checks size and digest and sets the
   * labels. An existing blob is not uploaded again (`existed: true`). On any failure the ingest
   * is aborted so no partial upload stays behind; a digest or size mismatch fails the commit
   * (FailedPreconditionError/InvalidArgumentError from containerd) and nothing is stored.
   */
  async write (data: Uint8Array | AsyncIterable<Uint8Array>, options: WriteOptions): Promise<WriteResult> {
    const { digest, size } = options.expected
    const ref = options.ref ?? `ipfs-estargz-${randomBytes(8).toString('hex')}-${digest}`
    const stream = this.rpc.duplex<WireWriteRequest, WireWriteResponse>('content', 'Write', this.ctx, `ref ${ref} (${digest})`, options)
    let written = 0
    let opened = false
    try {
      await stream.send({ action: 'STAT', ref, total: String(size), expected: digest })
      let offset: number
      try {
        offset = Number((await stream.receive()).offset)
        opened = true
      } catch (err) {
        if (isAlreadyExists(err)) return { digest, size, written: 0, existed: true }
        throw err
      }
      // A stale ingest under this ref is restarted from 0 (WRITE at offset 0 truncates it):
      // our sources are streams that cannot seek.
      let first = offset > 0
      const send = async (chunk: Uint8Array): Promise<void> => {
        for (let at = 0; at < chunk.length; at += DEFAULTS.writeChunkSize) {
          const piece = chunk.subarray(at, Math.min(chunk.length, at + DEFAULTS.writeChunkSize))
          await stream.send({ action: 'WRITE', ref, offset: String(first ? 0 : written), data: piece })
          first = false
          const res = await stream.receive()
          written += piece.length
          if (Number(res.offset) !== written) throw new ContentOffsetMismatchError(`content.Write ref ${ref}: containerd is at offset ${res.offset}, expected ${written}`)
        }
      }
      if (data instanceof Uint8Array) await send(data)
      else for await (const chunk of data) await send(chunk)
      await stream.send({ action: 'COMMIT', ref, total: String(size), expected: digest, offset: String(written), labels: options.labels ?? {} })
      const res = await stream.receive()
      stream.close()
      return { digest: res.digest !== '' ? res.digest : digest, size, written, existed: false }
    } catch (err) {
      stream.cancel()
      if (opened) await this.abort(ref).catch(() => {})
      // another writer committed the same blob meanwhile: that is success (content.WriteBlob does the same)
      if (isAlreadyExists(err)) return { digest, size, written, existed: true }
      throw err
    }
  }
}
