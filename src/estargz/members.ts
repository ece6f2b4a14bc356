import { gzipMember } from './gzip.js'

/** What a gzip member of an eStargz blob holds. */
export type SegmentKind = 'header' | 'data' | 'toc' | 'footer'

/**
 * One gzip member of the output blob, in order. `data` members hold only file payload (one
 * chunk), so identical contents give identical bytes in any layer; `header` members hold tar
 * headers and padding; `toc` is the TOC entry plus tar EOF; `footer` is the 51-byte footer.
 */
export interface BlobSegment {
  kind: SegmentKind
  /** Offset of the member in the blob. */
  offset: number
  bytes: Uint8Array
}

export type SegmentSink = (segment: BlobSegment) => Promise<void>

interface Pending {
  kind: SegmentKind
  compressed: Promise<Uint8Array>
  onPlaced?: (offset: number) => void
}

/**
 * Compresses members in parallel (zlib on the thread pool) and hands them to the sink in
 * order. At most `concurrency` members are in flight, which bounds memory to about
 * `concurrency × 2 × chunkSize` whatever the layer size.
 */
export class MemberPipeline {
  private readonly queue: Pending[] = []
  /** Compressed bytes handed to the sink so far: the offset of the next member. */
  offset = 0

  constructor (
    private readonly level: number,
    private readonly concurrency: number,
    private readonly sink: SegmentSink
  ) {}

  /** Queues a member; `onPlaced` learns its offset once every earlier member is out. */
  async add (kind: SegmentKind, uncompressed: Uint8Array, onPlaced?: (offset: number) => void): Promise<void> {
    const compressed = gzipMember(uncompressed, this.level)
    compressed.catch(() => {}) // awaited in order below; do not report it as unhandled meanwhile
    this.queue.push({ kind, compressed, onPlaced })
    while (this.queue.length >= this.concurrency) await this.drainOne()
  }

  /** Writes bytes that are already framed (the footer) after everything queued. */
  async addRaw (kind: SegmentKind, bytes: Uint8Array): Promise<void> {
    await this.flush()
    await this.emit(kind, bytes)
  }

  async flush (): Promise<void> {
    while (this.queue.length > 0) await this.drainOne()
  }

  private async drainOne (): Promise<void> {
    const m = this.queue.shift() as Pending
    const bytes = await m.compressed
    m.onPlaced?.(this.offset)
    await this.emit(m.kind, bytes)
  }

  private async emit (kind: SegmentKind, bytes: Uint8Array): Promise<void> {
    const offset = this.offset
    this.offset += bytes.length
    await this.sink({ kind, offset, bytes })
  }
}
