import { once } from 'node:events'
import type { ServerResponse } from 'node:http'
import type { CID } from 'multiformats/cid'
import type { FileNode } from '../ipfs/index.js'
import { leaves, type LeafSource } from './blob-stream.js'

/** Bytes of a pack file in the local store (`PackSpan` of the pack blockstore). */
export interface Span { pack: number, offset: number, length: number }

/**
 * What the local store offers for sending blobs as file runs: where verified blocks lie, and
 * reading such bytes back (0 bytes read: no longer verified there, read the ordinary way).
 */
export interface SpanStore {
  verifiedSpans: (cids: CID[]) => Array<Span | undefined>
  readVerified: (span: Span, buf: Buffer) => Promise<number>
}

/** A run of a blob's bytes that lies back to back in one pack: file offset `start`, then `span`. */
export interface Extent { start: number, span: Span }

/** Leaves looked up in the index between two yields to the event loop (the lookups are synchronous). */
const LOOKUP_BATCH = 512

/**
 * Where every byte of the file `root` lies in the local store, as runs of pack files: leaves
 * written one after the other (a layer is stored in file order) join into one run. Undefined
 * when a leaf is not in the local store, has not been verified there by this process, the file
 * has bytes inline in its nodes, or its runs average fewer than `minRunBytes` (leaves stored
 * out of order, as a lazy pull fetches them: a read per run would be slower than the batched
 * reads of the ordinary way, and the list long): such a blob is sent the ordinary way.
 */
export async function extentsOf (root: FileNode, source: Pick<LeafSource, 'node'>, store: SpanStore, options: { minRunBytes: number, signal: AbortSignal }): Promise<Extent[] | undefined> {
  const { signal } = options
  const out: Extent[] = []
  let cids: CID[] = []
  let starts: number[] = []
  const lookUp = (): boolean => {
    const spans = store.verifiedSpans(cids)
    for (let i = 0; i < spans.length; i++) {
      const span = spans[i]
      if (span == null) return false
      const last = out.at(-1)
      if (last != null && last.span.pack === span.pack && last.span.offset + last.span.length === span.offset && last.start + last.span.length === starts[i]) {
        last.span = { ...last.span, length: last.span.length + span.length }
      } else {
        out.push({ start: starts[i], span: { pack: span.pack, offset: span.offset, length: span.length } })
      }
    }
    cids = []
    starts = []
    return true
  }
  for await (const found of leaves(root, 0, 0, root.size - 1, source, signal)) {
    for (const leaf of found) {
      if (leaf.cid == null) return undefined
      cids.push(leaf.cid)
      starts.push(leaf.start)
    }
    if (cids.length >= LOOKUP_BATCH) {
      if (!lookUp()) return undefined
      await new Promise(resolve => setImmediate(resolve))
      signal.throwIfAborted()
    }
  }
  if (cids.length > 0 && !lookUp()) return undefined
  return root.size >= options.minRunBytes * out.length ? out : undefined
}

/**
 * Buffers of one size, reused across answers: a fresh buffer per piece costs a page fault per
 * 4 KiB on first touch, which for a blob sent at memory speed is most of the work.
 */
export class BufferPool {
  private readonly free: Buffer[] = []
  constructor (readonly bytes: number, private readonly maxKept: number) {}

  take (): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.bytes)
  }

  give (buf: Buffer): void {
    if (this.free.length < this.maxKept) this.free.push(buf)
  }
}

/**
 * Sends bytes [from, to] of a blob from its extents, a pool buffer at a time: the next piece is
 * read while the last one is written, and a buffer goes back to the pool once the socket has
 * taken it. Returns the file offset it reached: `to + 1` when all was sent, less when a span is
 * no longer verified in the store (its pack was compacted away), from where the caller sends the
 * rest the ordinary way. The answer is not ended.
 */
export async function sendExtents (res: ServerResponse, extents: Extent[], from: number, to: number, store: SpanStore, pool: BufferPool, signal: AbortSignal): Promise<number> {
  // the extent holding `from`
  let lo = 0
  let hi = extents.length - 1
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1
    if (extents[mid].start <= from) lo = mid
    else hi = mid - 1
  }
  let index = lo
  const read = async (pos: number): Promise<{ buf: Buffer, n: number }> => {
    while (extents[index].start + extents[index].span.length <= pos) index++
    const { start, span } = extents[index]
    const at = pos - start
    const n = Math.min(pool.bytes, span.length - at, to - pos + 1)
    const buf = pool.take()
    const got = await store.readVerified({ pack: span.pack, offset: span.offset + at, length: span.length - at }, buf.subarray(0, n))
    if (got !== n) {
      pool.give(buf)
      return { buf, n: 0 }
    }
    return { buf, n }
  }
  let pos = from
  let next: Promise<{ buf: Buffer, n: number }> | undefined = read(pos)
  while (next != null) {
    const { buf, n } = await next
    if (n === 0) return pos
    signal.throwIfAborted()
    const ok = res.write(buf.subarray(0, n), () => { pool.give(buf) })
    pos += n
    next = pos <= to ? read(pos) : undefined
    if (!ok) {
      try {
        await once(res, 'drain', { signal })
      } catch (err) {
        // the read started meanwhile settles on its own; its buffer is not needed
        next?.then(r => { if (r.n > 0) pool.give(r.buf) }, () => {})
        throw err
      }
    }
  }
  return pos
}
