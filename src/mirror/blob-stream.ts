import type { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { UnexpectedDagError, type BlockGetter, type FileNode } from '../ipfs/index.js'
import { limiter } from '../limit.js'

/** A leaf of a UnixFS file, where it sits in the file (or a node's inline data). */
export interface Leaf { cid?: CID, start: number, size: number, inline?: Uint8Array }

/** Where a stream's blocks come from; every block either path returns is checked against its CID. */
export interface LeafSource {
  /** One block through the node's fetch path (local store, peers, gateways). */
  getBlock: BlockGetter
  /**
   * Many blocks of the local store at once (undefined where one is not there, or cannot be
   * checked there: it then goes through `getBlock`). Absent: every leaf goes through `getBlock`.
   */
  readMany?: (cids: CID[], signal: AbortSignal, maxBytes: number) => Promise<Array<Uint8Array | undefined>>
  /** A decoded interior node (the caller may cache them: they are re-read by every range under them). */
  node: (cid: CID, signal: AbortSignal) => Promise<FileNode>
}

export interface StreamOptions {
  /** Leaves read with one `readMany`, and their bytes at most (one leaf over it is a batch of its own). */
  batchLeaves: number
  batchBytes: number
  /** Bytes of batches read ahead of the one being sent. */
  aheadBytes: number
  /** Leaves fetched at once through `getBlock` (those not in the local store). */
  concurrency: number
  signal: AbortSignal
}

/**
 * The leaves under `node` (at file offset `base`) that overlap [from, to], in file order, a
 * node's worth at a time: a layer is thousands of small leaves under a few interior nodes, so
 * the walk costs a step per interior node, not per leaf.
 */
export async function * leaves (node: FileNode, base: number, from: number, to: number, source: Pick<LeafSource, 'node'>, signal: AbortSignal): AsyncGenerator<Leaf[]> {
  let out: Leaf[] = []
  if (node.data.length > 0 && base <= to && base + node.data.length - 1 >= from) out.push({ start: base, size: node.data.length, inline: node.data })
  let pos = base + node.data.length
  for (let i = 0; i < node.children.length && pos <= to; i++) {
    const start = pos
    const size = node.sizes[i]
    pos += size
    if (pos - 1 < from || size === 0) continue
    const cid = node.children[i]
    if (cid.code === raw.code) {
      out.push({ cid, start, size })
    } else {
      if (out.length > 0) { yield out; out = [] }
      const child = await source.node(cid, signal)
      if (child.size !== size) throw new UnexpectedDagError(`node ${cid.toString()} holds ${child.size} bytes, parent says ${size}`)
      yield * leaves(child, start, from, to, source, signal)
    }
  }
  if (out.length > 0) yield out
}

/**
 * Bytes [from, to] of the UnixFS file `root` (already decoded), in order, in pieces of about
 * `batchBytes`. Leaves are read in batches from the local store (`readMany`: a run of a layer's
 * small leaves is one read there, not one per leaf), those not there through the fetch path,
 * `concurrency` at once, and about `aheadBytes` of batches are read ahead while one is sent:
 * memory per stream stays bounded. Each leaf's length is checked against its parent's record.
 */
export async function * streamFile (root: FileNode, from: number, to: number, source: LeafSource, options: StreamOptions): AsyncGenerator<Uint8Array> {
  const { signal } = options
  const fetchLimit = limiter(options.concurrency)
  const read = async (batch: Leaf[], bytes: number): Promise<Uint8Array> => {
    const cids: CID[] = []
    for (const l of batch) if (l.cid != null) cids.push(l.cid)
    // no more than the parents say the leaves hold: a leaf larger than its record is read alone, and refused below
    const got = source.readMany != null && cids.length > 0 ? await source.readMany(cids, signal, bytes) : new Array<Uint8Array | undefined>(cids.length)
    // leaves the local store lacks come through the fetch path (a promise each: they are few, or remote)
    const missing: Array<Promise<void>> = []
    for (let i = 0; i < cids.length; i++) {
      if (got[i] == null) missing.push(fetchLimit(async () => { got[i] = await source.getBlock(cids[i], signal) }))
    }
    await Promise.all(missing)
    const parts: Uint8Array[] = []
    let j = 0
    for (const leaf of batch) {
      const bytes = leaf.inline ?? got[j++] as Uint8Array
      if (bytes.length !== leaf.size) throw new UnexpectedDagError(`leaf ${leaf.cid?.toString() ?? '(inline)'} is ${bytes.length} bytes, parent says ${leaf.size}`)
      const a = Math.max(from, leaf.start) - leaf.start
      const b = Math.min(to, leaf.start + leaf.size - 1) - leaf.start + 1
      parts.push(a === 0 && b === bytes.length ? bytes : bytes.subarray(a, b))
    }
    return join(parts)
  }
  const ahead: Array<{ bytes: Promise<Uint8Array>, size: number }> = []
  let aheadBytes = 0
  let batch: Leaf[] = []
  let batchBytes = 0
  const start = (): void => {
    const bytes = read(batch, batchBytes)
    bytes.catch(() => {}) // awaited in order below; a failure there ends the stream
    ahead.push({ bytes, size: batchBytes })
    aheadBytes += batchBytes
    batch = []
    batchBytes = 0
  }
  const next = async (): Promise<Uint8Array> => {
    const { bytes, size } = ahead.shift() as { bytes: Promise<Uint8Array>, size: number }
    aheadBytes -= size
    return await bytes
  }
  for await (const found of leaves(root, 0, from, to, source, signal)) {
    for (const leaf of found) {
      if (batch.length > 0 && (batch.length >= options.batchLeaves || batchBytes + leaf.size > options.batchBytes)) start()
      batch.push(leaf)
      batchBytes += leaf.size
      while (aheadBytes >= options.aheadBytes) yield await next()
    }
  }
  if (batch.length > 0) start()
  while (ahead.length > 0) yield await next()
}

/**
 * The pieces as one buffer: without a copy when they lie back to back in one buffer (a run of
 * leaves read with one `pread`), else concatenated.
 */
function join (parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]
  let n = parts[0].length
  let adjacent = true
  for (let i = 1; i < parts.length; i++) {
    const p = parts[i - 1]
    const q = parts[i]
    adjacent &&= q.buffer === p.buffer && q.byteOffset === p.byteOffset + p.length
    n += q.length
  }
  if (adjacent) return new Uint8Array(parts[0].buffer, parts[0].byteOffset, n)
  return Buffer.concat(parts, n)
}
