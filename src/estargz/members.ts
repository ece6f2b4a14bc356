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
  /** Uncompressed size, counted against the in-flight budget. */
  bytes: number
}

/** Members queued at most, however small (tar header members are often a few hundred bytes). */
const MAX_QUEUED_MEMBERS = 256

/**
 * Compresses members in parallel (zlib on the thread pool) and hands them to the sink in
 * order. Work in flight is bounded by bytes — `concurrency × chunkSize` of uncompressed input —
 * rather than by count, so small header members never keep the cores idle, and memory stays
 * about `2 × concurrency × chunkSize` whatever the layer size.
 */
export class MemberPipeline {
  private readonly queue: Pending[] = []
  private queuedBytes = 0
  private readonly maxQueuedBytes: number
  /** Compressed bytes handed to the sink so far: the offset of the next member. */
  offset = 0

  constructor (
    private readonly level: number,
    concurrency: number,
    chunkSize: number,
    private readonly sink: SegmentSink
  ) {
    this.maxQueuedBytes = concurrency * chunkSize
  }

  /** Queues a member; `onPlaced` learns its offset once every earlier member is out. */
  async add (kind: SegmentKind, uncompressed: Uint8Array, onPlaced?: (offset: number) => void): Promise<void> {
    const compressed = gzipMember(uncompressed, this.level)
    compressed.catch(() => {}) // awaited in order below; do not report it as unhandled meanwhile
    this.queue.push({ kind, compressed, onPlaced, bytes: uncompressed.length })
    this.queuedBytes += uncompressed.length
    while (this.queue.length > 0 && (this.queuedBytes >= this.maxQueuedBytes || this.queue.length >= MAX_QUEUED_MEMBERS)) await this.drainOne()
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
    this.queuedBytes -= m.bytes
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
