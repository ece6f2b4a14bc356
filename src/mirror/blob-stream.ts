import type { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { decodeFileNode, UnexpectedDagError, type BlockGetter, type FileNode } from '../ipfs/index.js'

/** A leaf of a UnixFS file, where it sits in the file. */
interface Leaf { cid: CID, start: number, size: number, inline?: Uint8Array }

/**
 * The leaves of the file under `node` (at file offset `base`) that overlap [from, to], in file
 * order. Interior nodes are fetched as the walk reaches them (a few per thousand leaves).
 */
async function * leaves (node: FileNode, base: number, from: number, to: number, getBlock: BlockGetter, signal: AbortSignal): AsyncGenerator<Leaf> {
  if (node.data.length > 0 && base <= to && base + node.data.length - 1 >= from) yield { cid: undefined as unknown as CID, start: base, size: node.data.length, inline: node.data }
  let pos = base + node.data.length
  for (let i = 0; i < node.children.length && pos <= to; i++) {
    const start = pos
    const size = node.sizes[i]
    pos += size
    if (pos - 1 < from || size === 0) continue
    const cid = node.children[i]
    if (cid.code === raw.code) {
      yield { cid, start, size }
    } else {
      const child = decodeFileNode(cid, await getBlock(cid, signal))
      if (child.size !== size) throw new UnexpectedDagError(`node ${cid.toString()} holds ${child.size} bytes, parent says ${size}`)
      yield * leaves(child, start, from, to, getBlock, signal)
    }
  }
}

/**
 * Bytes [from, to] of the UnixFS file `root` (already decoded), in order, with up to
 * `concurrency` leaves (and about `aheadBytes`) fetched ahead: a layer of small gzip members is thousands of small
 * leaves, and one at a time the per-block cost of the store, not the bytes, sets the pace.
 * Each leaf's length is checked against its parent's record.
 */
export async function * streamFile (root: FileNode, from: number, to: number, getBlock: BlockGetter, options: { concurrency: number, aheadBytes: number, signal: AbortSignal }): AsyncGenerator<Uint8Array> {
  const { signal, concurrency, aheadBytes } = options
  const window: Array<{ leaf: Leaf, bytes: Promise<Uint8Array> }> = []
  let windowBytes = 0
  const walk = leaves(root, 0, from, to, getBlock, signal)
  let walked = false
  // Many small leaves in flight, but never more than `aheadBytes` of them: memory per stream stays bounded.
  const fill = async (): Promise<void> => {
    while (!walked && window.length < concurrency && (window.length === 0 || windowBytes < aheadBytes)) {
      const n = await walk.next()
      if (n.done === true) { walked = true; break }
      const leaf = n.value
      const bytes = leaf.inline != null ? Promise.resolve(leaf.inline) : getBlock(leaf.cid, signal)
      bytes.catch(() => {}) // awaited in order below; a failure there ends the stream
      window.push({ leaf, bytes })
      windowBytes += leaf.size
    }
  }
  try {
    await fill()
    while (window.length > 0) {
      const { leaf, bytes: pending } = window.shift() as { leaf: Leaf, bytes: Promise<Uint8Array> }
      windowBytes -= leaf.size
      const bytes = await pending
      if (bytes.length !== leaf.size) throw new UnexpectedDagError(`leaf ${leaf.cid.toString()} is ${bytes.length} bytes, parent says ${leaf.size}`)
      await fill()
      const a = Math.max(from, leaf.start) - leaf.start
      const b = Math.min(to, leaf.start + leaf.size - 1) - leaf.start + 1
      yield a === 0 && b === bytes.length ? bytes : bytes.subarray(a, b)
    }
  } finally {
    await walk.return(undefined)
  }
}
