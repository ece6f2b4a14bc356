import * as dagPb from '@ipld/dag-pb'
import { UnixFS } from 'ipfs-unixfs'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { identity } from 'multiformats/hashes/identity'
import { sha256 } from 'multiformats/hashes/sha2'
import { createHash } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import { InvalidOptionError, isAbortError } from '../errors.js'
import { AbortError, BlockDigestMismatchError, UnexpectedDagError } from './errors.js'
import type { LinkScope } from './open-links.js'

/** Fetches one block's bytes. Implementations decide where from (blockstore, peers). */
export type BlockGetter = (cid: CID, signal?: AbortSignal) => Promise<Uint8Array>

/**
 * A read's getter and how urgent its fetches are (lower: more urgent; the reader's own getter is
 * 0): a read joins an interior node's fetch under way only if that fetch is at least as urgent.
 */
interface Via {
  getBlock: BlockGetter
  rank: number
}

/** Dag reader defaults. */
export const DEFAULTS = {
  /** Decoded interior nodes kept per reader, at most... */
  nodeCacheEntries: 256,
  /**
   * ...and at most about this many bytes of them: decoded, a node of 1024 links holds ~0.5 MB of
   * heap (a CID object per link), ten times its block. A layer of a million leaves has a
   * thousand such nodes; past the cap, a read decodes its node again from the local blockstore.
   */
  nodeCacheBytes: 8 << 20
} as const

/** Heap per decoded link (its CID object and size), measured, rounded up. */
const DECODED_LINK_BYTES = 512

/** What a decoded node costs in the cache (its inline data, its links). */
function decodedBytes (node: FileNode): number {
  return 64 + node.data.length + node.children.length * DECODED_LINK_BYTES
}

/** Collects a blockstore `get()` result (an iterable of pieces since interface-blockstore 7). */
export async function collectBlock (pieces: Iterable<Uint8Array> | AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = []
  let n = 0
  for await (const p of pieces) { parts.push(p); n += p.length }
  return parts.length === 1 ? parts[0] : Buffer.concat(parts, n)
}

/** Checks bytes against a CID (sha2-256 and identity multihashes). */
export function verifyBlock (cid: CID, bytes: Uint8Array): void {
  const code = cid.multihash.code
  let digest: Uint8Array
  if (code === sha256.code) digest = createHash('sha256').update(bytes).digest()
  else if (code === identity.code) digest = bytes
  else throw new UnexpectedDagError(`block ${cid.toString()}: unsupported hash function 0x${code.toString(16)}`)
  if (Buffer.compare(Buffer.from(digest), Buffer.from(cid.multihash.digest)) !== 0) throw new BlockDigestMismatchError(cid.toString())
}

/** A decoded UnixFS file node: inline data first, then children covering `sizes` bytes each. */
export interface FileNode {
  data: Uint8Array
  children: CID[]
  sizes: number[]
  size: number
}

export function decodeFileNode (cid: CID, bytes: Uint8Array): FileNode {
  if (cid.code === raw.code) return { data: bytes, children: [], sizes: [], size: bytes.length }
  if (cid.code !== dagPb.code) throw new UnexpectedDagError(`${cid.toString()} is not a UnixFS file (codec 0x${cid.code.toString(16)})`)
  let pb: dagPb.PBNode
  let fs: UnixFS
  try {
    pb = dagPb.decode(bytes)
    if (pb.Data == null) throw new Error('no Data')
    fs = UnixFS.unmarshal(pb.Data)
  } catch (err) {
    throw new UnexpectedDagError(`${cid.toString()} is not a UnixFS node: ${(err as Error).message}`)
  }
  if (fs.type !== 'file' && fs.type !== 'raw') throw new UnexpectedDagError(`${cid.toString()} is a UnixFS ${fs.type}, not a file`)
  if (fs.blockSizes.length !== pb.Links.length) throw new UnexpectedDagError(`${cid.toString()}: ${pb.Links.length} links but ${fs.blockSizes.length} block sizes`)
  const data = fs.data ?? new Uint8Array(0)
  return {
    data,
    children: pb.Links.map(l => l.Hash),
    sizes: fs.blockSizes.map(Number),
    size: Number(fs.fileSize())
  }
}

/**
 * Reads byte ranges of a UnixFS file by walking its DAG with the `blockSizes` of each node, so
 * a range fetches exactly the blocks under it: the root, the interior nodes on the way, and the
 * leaves that overlap the range. Sibling blocks are requested in parallel (bitswap pipelines
 * them). Interior nodes are cached (decoded); leaves are not.
 */
export class UnixfsFileReader {
  /**
   * Decoded interior nodes (their fetch while under way), the least recently used dropped (by
   * count and by decoded size); each with the rank of the most urgent getter that fetched it
   * (0: the reader's own; more: a prefetch read, the interior prefetch, a background read).
   */
  private readonly cache: LRUCache<string, { node: Promise<FileNode>, rank: number }>
  /** Interior nodes whose links went into `links` (once each, though the cache may decode one again). */
  private readonly linked = new Set<string>()

  private constructor (
    readonly root: CID,
    private readonly getBlock: BlockGetter,
    private readonly rootNode: FileNode,
    cacheEntries: number,
    cacheBytes: number,
    private readonly links: LinkScope | undefined
  ) {
    if (!Number.isSafeInteger(cacheEntries) || cacheEntries < 1) throw new InvalidOptionError(`nodeCacheEntries must be a positive integer, got ${cacheEntries}`)
    if (!Number.isSafeInteger(cacheBytes) || cacheBytes < 1) throw new InvalidOptionError(`nodeCacheBytes must be a positive integer, got ${cacheBytes}`)
    // a node being fetched counts as one link until it is decoded and its size known
    this.cache = new LRUCache({ max: cacheEntries, maxSize: cacheBytes, sizeCalculation: () => DECODED_LINK_BYTES })
    links?.add(rootNode.children)
  }

  /**
   * Fetches and decodes the root only. `links`: where the reader says which blocks it may fetch
   * (the links of every node it decodes) until `close` (src/ipfs/open-links.ts).
   */
  static async open (root: CID, getBlock: BlockGetter, options: { signal?: AbortSignal, nodeCacheEntries?: number, nodeCacheBytes?: number, links?: LinkScope } = {}): Promise<UnixfsFileReader> {
    const node = decodeFileNode(root, await abortable(getBlock(root, options.signal), options.signal))
    return new UnixfsFileReader(root, getBlock, node, options.nodeCacheEntries ?? DEFAULTS.nodeCacheEntries, options.nodeCacheBytes ?? DEFAULTS.nodeCacheBytes, options.links)
  }

  /** Forgets the links this reader registered; reads still work. */
  close (): void {
    this.links?.close()
  }

  /**
   * Fetches the root's interior children (one level: a member-aligned layer up to 1024 × 1024
   * leaves), all at once, into the node cache. Each one otherwise costs a first read under it a
   * second round trip (interior node, then leaf); they are small (≈ 45 bytes a link). Errors
   * are left to the read that needs the node.
   */
  async prefetchInterior (signal?: AbortSignal, getBlock: BlockGetter = this.getBlock, rank?: number): Promise<void> {
    const via = this.via(getBlock, rank)
    const interior = this.rootNode.children.filter(c => c.code !== raw.code)
    await Promise.allSettled(interior.map(async c => await this.node(c, signal, via)))
  }

  get size (): number {
    return this.rootNode.size
  }

  /**
   * `getBlock`, when given, fetches this read's blocks (e.g. at another priority), `rank` saying
   * how urgent they are (see `Via`; another getter without one counts as the least urgent).
   */
  async read (offset: number, length: number, signal?: AbortSignal, getBlock: BlockGetter = this.getBlock, rank?: number): Promise<Uint8Array> {
    checkAbort(signal)
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) throw new RangeError(`invalid range ${offset}+${length}`)
    const end = Math.min(this.size, offset + length)
    if (end <= offset) return new Uint8Array(0)
    const pieces: Piece[] = []
    await abortable(this.fill(this.rootNode, 0, offset, end, pieces, signal, this.via(getBlock, rank)), signal)
    checkAbort(signal)
    // A range inside one block (a small file's chunk, most reads) is a view of that block: no
    // fresh buffer, no copy. The caller must not modify it (the block may be shared).
    if (pieces.length === 1 && pieces[0].bytes.length === end - offset) return pieces[0].bytes
    const out = Buffer.allocUnsafe(end - offset)
    for (const p of pieces) out.set(p.bytes, p.at)
    return out
  }

  /** Collects the parts of `node` (which starts at file offset `base`) inside [from, to), with their place in the range. */
  private async fill (node: FileNode, base: number, from: number, to: number, pieces: Piece[], signal: AbortSignal | undefined, via: Via): Promise<void> {
    if (node.data.length > 0) overlap(node.data, base, from, to, pieces)
    let pos = base + node.data.length
    const jobs: Array<Promise<void>> = []
    for (let i = 0; i < node.children.length && pos < to; i++) {
      const start = pos
      const size = node.sizes[i]
      pos += size
      if (pos <= from || size === 0) continue
      const cid = node.children[i]
      if (cid.code === raw.code) {
        jobs.push(via.getBlock(cid, signal).then(bytes => {
          if (bytes.length !== size) throw new UnexpectedDagError(`leaf ${cid.toString()} is ${bytes.length} bytes, parent says ${size}`)
          overlap(bytes, start, from, to, pieces)
        }))
      } else {
        jobs.push(this.node(cid, signal, via).then(async child => {
          if (child.size !== size) throw new UnexpectedDagError(`node ${cid.toString()} holds ${child.size} bytes, parent says ${size}`)
          await this.fill(child, start, from, to, pieces, signal, via)
        }))
      }
    }
    // Wait for all so no fetch outlives a failed read; report the first error.
    const results = await Promise.allSettled(jobs)
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failed != null) throw failed.reason
  }

  /** A getter with its rank: the reader's own is 0; another without a rank is the least urgent. */
  private via (getBlock: BlockGetter, rank?: number): Via {
    return { getBlock, rank: rank ?? (getBlock === this.getBlock ? 0 : Infinity) }
  }

  private async node (cid: CID, signal: AbortSignal | undefined, via: Via): Promise<FileNode> {
    try {
      return await this.sharedNode(cid, signal, via)
    } catch (err) {
      // A fetch shared with a reader that gave up fails for that reader only: try once more.
      if (signal?.aborted === true || !isAbortError(err)) throw err
      return await this.sharedNode(cid, signal, via)
    }
  }

  private async sharedNode (cid: CID, signal: AbortSignal | undefined, via: Via): Promise<FileNode> {
    const key = cid.toString()
    const known = this.cache.get(key)
    if (known != null && known.rank <= via.rank) return await known.node
    // Not fetched yet, or only at a lower priority: a read waiting on a node the interior
    // prefetch is fetching in the background asks for it at its own priority too (the block
    // exchange then moves the want ahead of the queue it waits in), and whichever fetch answers
    // first serves both. Joining the background fetch alone left a mount's first read (or its
    // prefetch) waiting for the whole background queue before it.
    const fetching = via.getBlock(cid, signal).then(bytes => decodeFileNode(cid, bytes))
    const node = known == null ? fetching : Promise.any([known.node, fetching]).catch(async () => await fetching)
    const entry = { node, rank: via.rank }
    this.cache.set(key, entry)
    // a failed fetch is not kept: the next read fetches again; a decoded one is counted at its
    // size, and serves every read (nothing is left to wait for)
    node.then(
      (decoded) => {
        entry.rank = 0
        if (this.cache.peek(key) === entry) this.cache.set(key, entry, { size: decodedBytes(decoded) })
        if (this.links != null && !this.linked.has(key)) {
          this.linked.add(key)
          this.links.add(decoded.children)
        }
      },
      () => { if (this.cache.peek(key) === entry) this.cache.delete(key) }
    )
    return await node
  }
}

/** Throws our typed AbortError (name `AbortError`) when the signal has fired. */
export function checkAbort (signal?: AbortSignal): void {
  if (signal?.aborted === true) throw new AbortError()
}

/**
 * `work`, failing with our AbortError when `signal` fired: a block store or peer may reject with
 * its own abort error (a DOMException, the signal's reason) instead.
 */
async function abortable<T> (work: Promise<T>, signal?: AbortSignal): Promise<T> {
  try {
    return await work
  } catch (err) {
    checkAbort(signal)
    throw err
  }
}

/** A part of a read: bytes of one block, and where they go in the range. */
interface Piece { bytes: Uint8Array, at: number }

/** Adds the part of `bytes` (which start at file offset `start`) inside [from, to) to `pieces`. */
function overlap (bytes: Uint8Array, start: number, from: number, to: number, pieces: Piece[]): void {
  const a = Math.max(from, start)
  const b = Math.min(to, start + bytes.length)
  if (b > a) pieces.push({ bytes: bytes.subarray(a - start, b - start), at: a - from })
}

export { CID }
