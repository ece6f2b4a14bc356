import { unixfs, type AddFileOptions } from '@helia/unixfs'
import type { WritableStorage } from 'ipfs-unixfs-importer'
import { fixedSize, type Chunker } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import * as raw from 'multiformats/codecs/raw'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import type { BlobSegment, SegmentKind, SegmentSink } from '../estargz/index.js'
import { AbortError, InvalidOptionError, UnexpectedDagError } from './errors.js'

/** Import defaults, in one place. */
export const DEFAULTS = {
  /** Largest leaf of the member-aligned and plain layouts. */
  maxLeafSize: 1 << 20,
  /**
   * Member-aligned layout: small members (tar headers, small files' data) share a leaf until it
   * holds this many bytes; a data member this big or bigger starts leaves of its own. One leaf
   * per member made a small file's read two blocks (its data, then the next file's tar header)
   * and a layer of small files thousands of blocks of a few KiB, each with its own cost on both
   * nodes; a read of one now brings its neighbours in tar order too, as the reference's 50 kB
   * fetch granularity does.
   */
  smallMemberLeafBytes: 16 << 10,
  /** Links per interior node, as @helia/unixfs 8. */
  maxChildrenPerNode: 1024,
  /** What `ipfs add --cid-version=1` does: 256 KiB chunks, 174 links per node. */
  kubo: { chunkSize: 256 << 10, maxChildrenPerNode: 174 },
  /** Members buffered between the eStargz writer and the importer (bounds memory). */
  queueDepth: 4,
  /** Leaves hashed and stored at once. */
  blockWriteConcurrency: 8
} as const

/** Progress of an import, reported after each leaf. */
export interface ImportProgress {
  /** Bytes of content imported so far. */
  bytes: number
  /** Leaves written so far. */
  leaves: number
}

export interface ImportOptions {
  /** Fixed 256 KiB leaves, 174 links per node: the CIDs Kubo's `ipfs add --cid-version=1` gives. */
  kuboCompatible?: boolean
  /**
   * Member-aligned import: small members share a leaf until it holds this many bytes (default
   * `DEFAULTS.smallMemberLeafBytes`); 0 gives every member leaves of its own, the layout of
   * pushes before small members shared leaves.
   */
  smallMemberLeafBytes?: number
  signal?: AbortSignal
  onProgress?: (progress: ImportProgress) => void
}

export interface ImportResult {
  /** Root of the UnixFS file (a raw leaf when the content fits one leaf). */
  cid: CID
  /** Bytes of content. */
  size: number
  /** Blocks written: leaves and interior nodes (duplicates included). */
  blocks: number
}

/**
 * The TOC member of a member-aligned eStargz import: one raw leaf of its own, so it can be
 * fetched by CID without walking the layer's DAG (the layer's annotations name it).
 */
export interface TocLeaf {
  cid: CID
  /** The member's offset in the blob (where the footer points). */
  offset: number
}

/**
 * Cuts incoming gzip members into leaves (docs/ipfs.md): a member of `group` bytes or more
 * starts a leaf and is cut every `max` bytes from its start; smaller members are gathered into
 * one leaf, closed before a data member once it holds `group` bytes (so a small file's data and
 * the tar header after it share a leaf); the TOC and the footer get leaves of their own. `kindOf`
 * names each member (the pieces reach the chunker as they were pushed).
 */
function memberChunker (max: number, group: number, kindOf: (member: Uint8Array) => SegmentKind): Chunker {
  return async function * (source) {
    let gathered: Uint8Array[] = []
    let gatheredBytes = 0
    const close = function * (): Generator<Uint8Array> {
      if (gathered.length === 0) return
      yield gathered.length === 1 ? gathered[0] : Buffer.concat(gathered, gatheredBytes)
      gathered = []
      gatheredBytes = 0
    }
    for await (const member of source) {
      const kind = kindOf(member)
      // a member this big (a data member, in practice: a tar header is ~100 bytes unless long
      // PAX records make it more) is never gathered, so no leaf grows over `max`
      const own = kind === 'toc' || kind === 'footer' || member.length >= Math.min(group, max)
      if (own || gatheredBytes + member.length > max || (kind === 'data' && gatheredBytes >= group)) yield * close()
      if (own) {
        for (let at = 0; at < member.length; at += max) yield member.subarray(at, Math.min(member.length, at + max))
      } else {
        gathered.push(member)
        gatheredBytes += member.length
      }
    }
    yield * close()
  }
}

function importerOptions (chunker: Chunker, maxChildrenPerNode: number): AddFileOptions {
  return {
    cidVersion: 1,
    rawLeaves: true,
    leafType: 'raw',
    reduceSingleLeafToSelf: true,
    chunker,
    layout: balanced({ maxChildrenPerNode }),
    blockWriteConcurrency: DEFAULTS.blockWriteConcurrency
  }
}

/** Counts blocks and content bytes on their way to the blockstore. */
class Counter implements WritableStorage {
  blocks = 0
  bytes = 0
  leaves = 0
  constructor (private readonly inner: WritableStorage, private readonly options: ImportOptions) {}
  // @helia/unixfs takes a whole blockstore; adding a file only writes to it.
  get = async function * (): AsyncGenerator<Uint8Array> { throw new InvalidOptionError('an import only writes') }
  has = async (): Promise<boolean> => { throw new InvalidOptionError('an import only writes') }
  put: WritableStorage['put'] = async (cid, bytes, opts) => {
    if (this.options.signal?.aborted === true) throw new AbortError('import aborted')
    const r = await this.inner.put(cid, bytes, opts)
    this.blocks++
    if (cid.code === 0x55 && bytes instanceof Uint8Array) {
      this.leaves++
      this.bytes += bytes.length
      this.options.onProgress?.({ bytes: this.bytes, leaves: this.leaves })
    }
    return r
  }
}

async function run (content: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, blockstore: WritableStorage, opts: AddFileOptions, options: ImportOptions): Promise<ImportResult> {
  const counter = new Counter(blockstore, options)
  const cid = await unixfs({ blockstore: counter }).addByteStream(content, opts)
  return { cid, size: counter.bytes, blocks: counter.blocks }
}

function plainOptions (options: ImportOptions): AddFileOptions {
  return options.kuboCompatible === true
    ? importerOptions(fixedSize({ chunkSize: DEFAULTS.kubo.chunkSize }), DEFAULTS.kubo.maxChildrenPerNode)
    : importerOptions(fixedSize({ chunkSize: DEFAULTS.maxLeafSize }), DEFAULTS.maxChildrenPerNode)
}

/** Imports a blob held in memory (configs, manifests, index.json). */
export async function importBytes (blockstore: WritableStorage, bytes: Uint8Array, options: ImportOptions = {}): Promise<ImportResult> {
  return await run([bytes], blockstore, plainOptions(options), options)
}

/** Imports a blob from a stream (a non-eStargz layer, a file), fixed-size leaves. */
export async function importStream (blockstore: WritableStorage, stream: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, options: ImportOptions = {}): Promise<ImportResult> {
  return await run(stream, blockstore, plainOptions(options), options)
}

/**
 * A bounded hand-over from a push producer (the eStargz writer's sink) to a pull consumer (the
 * importer). `push` waits while `depth` items are queued, so the writer runs no further ahead
 * than that; a failure on either side ends the other.
 */
class Channel<T> implements AsyncIterable<T> {
  private readonly items: T[] = []
  private ended = false
  private error: unknown
  private wakeConsumer: (() => void) | undefined
  private wakeProducer: (() => void) | undefined

  constructor (private readonly depth: number) {}

  async push (item: T): Promise<void> {
    while (this.items.length >= this.depth && this.error == null) {
      await new Promise<void>(resolve => { this.wakeProducer = resolve })
    }
    if (this.error != null) throw this.error
    if (this.ended) throw new Error('push after end')
    this.items.push(item)
    this.wake()
  }

  end (): void {
    this.ended = true
    this.wake()
  }

  fail (err: unknown): void {
    this.error ??= err
    this.wake()
  }

  private wake (): void {
    const c = this.wakeConsumer
    const p = this.wakeProducer
    this.wakeConsumer = undefined
    this.wakeProducer = undefined
    c?.()
    p?.()
  }

  async * [Symbol.asyncIterator] (): AsyncIterator<T> {
    try {
      while (true) {
        if (this.error != null) throw this.error
        const item = this.items.shift()
        if (item !== undefined) {
          this.wake()
          yield item
          continue
        }
        if (this.ended) return
        await new Promise<void>(resolve => { this.wakeConsumer = resolve })
      }
    } finally {
      // The consumer stopped (done or failed): a waiting producer must not hang.
      if (!this.ended) this.fail(this.error ?? new AbortError('importer stopped'))
    }
  }
}

/**
 * Member-aligned import (docs/ipfs.md) of a blob whose gzip members arrive one by one, as
 * the eStargz writer produces them: a big data member starts a new raw leaf (a member over
 * 1 MiB is cut into 1 MiB leaves from its start), so its leaves hold only its bytes — identical
 * big files give identical leaf CIDs in any layer; small members share leaves of ~16 KiB; the TOC
 * and footer get leaves of their own. Runs alongside the producer with a few members of slack;
 * no second pass.
 *
 * `produce` receives the sink to hand to `buildEstargz`; its result is returned as `produced`.
 * With `kuboCompatible` the same bytes are cut into fixed 256 KiB leaves instead.
 */
export async function importSegments<T> (
  blockstore: WritableStorage,
  produce: (sink: SegmentSink) => Promise<T>,
  options: ImportOptions = {}
): Promise<ImportResult & { produced: T, toc?: TocLeaf }> {
  const channel = new Channel<Uint8Array>(DEFAULTS.queueDepth)
  const memberAligned = options.kuboCompatible !== true
  const kinds = new WeakMap<Uint8Array, SegmentKind>()
  const group = options.smallMemberLeafBytes ?? DEFAULTS.smallMemberLeafBytes
  if (!Number.isSafeInteger(group) || group < 0) throw new InvalidOptionError(`smallMemberLeafBytes must be a non-negative integer, got ${String(group)}`)
  let expected = 0
  let toc: Promise<TocLeaf> | undefined
  const sink: SegmentSink = async (segment: BlobSegment) => {
    if (segment.offset !== expected) throw new InvalidOptionError(`segment at offset ${segment.offset}, expected ${expected}: segments must arrive in order`)
    expected += segment.bytes.length
    if (segment.bytes.length === 0) return
    // Copy: the producer may reuse its buffer once the sink returns.
    const bytes: Uint8Array = Uint8Array.prototype.slice.call(segment.bytes)
    kinds.set(bytes, segment.kind)
    // the chunker gives a member of at most one leaf's size a leaf of its own: its CID is known
    if (segment.kind === 'toc' && memberAligned && bytes.length <= DEFAULTS.maxLeafSize) {
      const offset = segment.offset
      toc = Promise.resolve(sha256.digest(bytes)).then(h => ({ cid: CID.createV1(raw.code, h), offset }))
    }
    await channel.push(bytes)
  }
  const opts = options.kuboCompatible === true
    ? importerOptions(fixedSize({ chunkSize: DEFAULTS.kubo.chunkSize }), DEFAULTS.kubo.maxChildrenPerNode)
    : importerOptions(memberChunker(DEFAULTS.maxLeafSize, group, (m) => {
      const kind = kinds.get(m)
      if (kind == null) throw new UnexpectedDagError('the importer handed the chunker a piece that is not a pushed member')
      return kind
    }), DEFAULTS.maxChildrenPerNode)

  const onAbort = (): void => { channel.fail(new AbortError('import aborted')) }
  options.signal?.addEventListener('abort', onAbort, { once: true })
  try {
    const importing = run(channel, blockstore, opts, options)
    importing.catch(err => { channel.fail(err) })
    let produced: T
    try {
      produced = await produce(sink)
      channel.end()
    } catch (err) {
      channel.fail(err)
      // When the importer failed first (a blockstore error), the producer only saw the hang-up.
      let importError: unknown
      await importing.catch(e => { importError = e })
      throw importError ?? err
    }
    const result = await importing
    if (result.size !== expected) throw new UnexpectedDagError(`imported ${result.size} bytes, the producer wrote ${expected}`)
    return { ...result, produced, ...(toc != null ? { toc: await toc } : {}) }
  } finally {
    options.signal?.removeEventListener('abort', onAbort)
  }
}
