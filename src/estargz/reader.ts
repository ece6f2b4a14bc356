import { DEFAULTS, FOOTER_SIZE, LEGACY_FOOTER_SIZE, TOC_TAR_NAME } from './constants.js'
import { Sha256, sha256Digest } from './digest.js'
import {
  ChunkDigestMismatchError, EntryNotFoundError, LinkLoopError, MalformedTocError, NotARegularFileError,
  TocDigestMismatchError, TocTooLargeError, TruncatedBlobError, BadFooterError, AbortError, MalformedGzipError
} from './errors.js'
import { parseFooter } from './footer.js'
import { gunzipStream, inflateRange } from './gzip.js'
import { cleanEntryName, climbsOutOfRoot } from './paths.js'
import { readTarStream } from './tar/stream.js'
import { parseToc, type Toc } from './toc.js'
import { buildTree, type Chunk, type LayerNode, type LayerTree } from './tree.js'

/**
 * Reads `length` bytes at `offset` of a blob. It may return fewer bytes only at the end of the
 * blob; the reader treats a short read anywhere else as a truncated blob.
 */
export type RangeRead = (offset: number, length: number, signal?: AbortSignal) => Promise<Uint8Array>

export interface OpenOptions {
  /** The TOC digest the caller trusts (the layer annotation); a mismatch fails the open. */
  tocDigest?: string
  /** Cap on the compressed TOC member fetched. Default 64 MiB. */
  maxTocCompressedSize?: number
  /** Cap on the decompressed TOC JSON. Default 256 MiB. */
  maxTocSize?: number
  /**
   * Bytes read from the blob's end in the first read (at least the footer). When the TOC member
   * fits in them the open is one read instead of two: over a network each read is a round trip,
   * and a mount waits for both. Default: the footer only.
   */
  tailBytes?: number
  /**
   * Where the TOC member is, as the image said ahead (see {@link TocMemberHint}): the open then
   * skips the footer read. Used only with `tocDigest`, and only when the member fits exactly
   * between `offset` and an eStargz footer at the blob's end and holds the TOC of that digest;
   * otherwise the open reads the footer as usual and `onHintRefused` hears why.
   */
  tocMember?: TocMemberHint
  onHintRefused?: (err: Error) => void
  signal?: AbortSignal
}

/**
 * The TOC member of a blob, fetchable apart from the blob (in IPFS, the member's own leaf block,
 * named in the layer's annotations), and the offset it sits at in the blob.
 */
export interface TocMemberHint {
  offset: number
  /** Up to `length` bytes from the start of the member's own copy (fewer: the copy is shorter). */
  read: (length: number, signal?: AbortSignal) => Promise<Uint8Array>
}

export interface VerifyReport {
  tocDigest: string
  entries: number
  regularFiles: number
  chunks: number
  bytes: number
}

/**
 * Where the footer says the TOC member lies: before the footer, and not over the cap on what is
 * fetched. Shared with the writer, which checks the member it wrote.
 */
export function checkTocExtent (tocOffset: number, tocEnd: number, maxTocCompressedSize: number = DEFAULTS.maxTocCompressedSize): void {
  if (tocOffset >= tocEnd) throw new BadFooterError(`footer points at TOC offset ${tocOffset}, beyond the blob's ${tocEnd} payload bytes`)
  if (tocEnd - tocOffset > maxTocCompressedSize) throw new TocTooLargeError(`compressed TOC is ${tocEnd - tocOffset} bytes, more than the ${maxTocCompressedSize}-byte cap`)
}

/**
 * Every check an open runs on the TOC JSON once its digest is settled: the size cap, the JSON
 * schema, and the tree it describes (names, links, chunk extents). The writer runs it on the TOC
 * it is about to write, so a layer that builds is a layer that opens: one definition of a valid
 * TOC, not two that drift apart.
 */
export function checkToc (json: Uint8Array, tocOffset: number, maxTocSize: number = DEFAULTS.maxTocSize): { toc: Toc, tree: LayerTree } {
  if (json.length > maxTocSize) throw new TocTooLargeError(`TOC is ${json.length} bytes, larger than ${maxTocSize} bytes`)
  const toc = parseToc(json)
  return { toc, tree: buildTree(toc, tocOffset) }
}

/** The TOC member parsed: the JSON bytes and their digest. */
async function readTocMember (compressed: Uint8Array, maxTocSize: number): Promise<{ json: Uint8Array, digest: string }> {
  // The member holds one tar entry plus padding and the 1024-byte EOF; allow for them.
  const tooLarge = (): Error => new TocTooLargeError(`TOC is larger than ${maxTocSize} bytes`)
  const entries = readTarStream(gunzipStream(compressed, maxTocSize + 64 * 1024, tooLarge))
  try {
    const first = await entries.next()
    if (first.done === true) throw new MalformedTocError('the TOC member holds no tar entry')
    const { header } = first.value
    if (cleanEntryName(header.name) !== TOC_TAR_NAME) throw new MalformedTocError(`the TOC member holds ${JSON.stringify(header.name)}, not ${TOC_TAR_NAME}`)
    if (header.size > maxTocSize) throw tooLarge()
    const parts: Uint8Array[] = []
    for await (const piece of first.value.data()) parts.push(piece)
    const json = Buffer.concat(parts)
    return { json, digest: sha256Digest(json) }
  } finally {
    await entries.return(undefined)
  }
}

/**
 * Reads an eStargz (or legacy stargz) blob through a range-read function: footer, TOC, tree,
 * and file contents, where every chunk is checked against its digest before a byte of it is
 * returned.
 */
export class EstargzReader {
  private constructor (
    private readonly read: RangeRead,
    readonly blobSize: number,
    readonly toc: Toc,
    /** sha256 of the TOC JSON as stored. */
    readonly tocDigest: string,
    readonly tocOffset: number,
    readonly footerSize: number,
    readonly tree: LayerTree
  ) {}

  /**
   * Opens a blob with one or two range reads: the footer (with `tailBytes` before it), then what
   * of the TOC member the first read did not hold. With `tocDigest` the
   * TOC must match it; without, the caller must check {@link tocDigest} against a trusted value.
   */
  static async open (read: RangeRead, blobSize: number, options: OpenOptions = {}): Promise<EstargzReader> {
    const maxTocCompressedSize = options.maxTocCompressedSize ?? DEFAULTS.maxTocCompressedSize
    const maxTocSize = options.maxTocSize ?? DEFAULTS.maxTocSize
    if (blobSize < LEGACY_FOOTER_SIZE) throw new BadFooterError(`blob is ${blobSize} bytes, too small to hold a footer`)
    if (options.tocMember != null && options.tocDigest != null) {
      try {
        return await EstargzReader.openAt(read, blobSize, options.tocMember, options.tocDigest, maxTocCompressedSize, maxTocSize, options.signal)
      } catch (err) {
        if (options.signal?.aborted === true) throw err
        options.onHintRefused?.(err as Error)
      }
    }
    const tailLength = Math.min(Math.max(FOOTER_SIZE, options.tailBytes ?? FOOTER_SIZE), blobSize)
    const tailStart = blobSize - tailLength
    const tail = await readExactly(read, tailStart, tailLength, options.signal, 'footer')
    const { tocOffset, footerSize } = parseFooter(tail.subarray(Math.max(0, tail.length - FOOTER_SIZE)))
    const tocEnd = blobSize - footerSize
    checkTocExtent(tocOffset, tocEnd, maxTocCompressedSize)
    // the TOC member from the tail already read, and only the part before it from the blob
    const inTail = tail.subarray(Math.max(0, tocOffset - tailStart), tocEnd - tailStart)
    const member = tocOffset >= tailStart
      ? inTail
      : concat(await readExactly(read, tocOffset, tailStart - tocOffset, options.signal, 'TOC'), inTail)
    const { json, digest } = await readTocMember(member, maxTocSize)
    if (options.tocDigest != null && options.tocDigest !== digest) throw new TocDigestMismatchError(options.tocDigest, digest)
    const { toc, tree } = checkToc(json, tocOffset, maxTocSize)
    return new EstargzReader(read, blobSize, toc, digest, tocOffset, footerSize, tree)
  }

  /**
   * The open with the TOC member fetched apart. Trusted only as far as it checks out: the member
   * must end exactly where an eStargz footer begins (so `offset` is where the footer would
   * point), and its TOC must have the trusted digest; the footer itself is not read.
   */
  private static async openAt (read: RangeRead, blobSize: number, hint: TocMemberHint, tocDigest: string, maxTocCompressedSize: number, maxTocSize: number, signal?: AbortSignal): Promise<EstargzReader> {
    const tocEnd = blobSize - FOOTER_SIZE
    if (!Number.isSafeInteger(hint.offset) || hint.offset < 0) throw new BadFooterError(`the TOC hint's offset ${hint.offset} is not a blob offset`)
    checkTocExtent(hint.offset, tocEnd, maxTocCompressedSize)
    // one byte more than it should hold: a longer copy is told apart from the right one
    const member = await hint.read(tocEnd - hint.offset + 1, signal)
    if (member.length !== tocEnd - hint.offset) throw new BadFooterError(`the TOC hint's member is ${member.length > tocEnd - hint.offset ? 'longer than' : `${member.length} bytes, not`} the ${tocEnd - hint.offset} bytes from offset ${hint.offset} to the footer`)
    const { json, digest } = await readTocMember(member, maxTocSize)
    if (digest !== tocDigest) throw new TocDigestMismatchError(tocDigest, digest)
    const { toc, tree } = checkToc(json, hint.offset, maxTocSize)
    return new EstargzReader(read, blobSize, toc, digest, hint.offset, FOOTER_SIZE, tree)
  }

  get root (): LayerNode {
    return this.tree.root
  }

  /** The node at a path (absolute or relative, not following symlinks), or undefined. */
  lookup (path: string): LayerNode | undefined {
    if (climbsOutOfRoot(path)) return undefined
    return this.tree.byName.get(cleanEntryName(path))
  }

  /**
   * The node at a path, following symlinks inside the layer (absolute targets are taken
   * relative to the layer root, as inside a container). Throws for missing paths and loops.
   */
  resolve (path: string, maxDepth: number = DEFAULTS.maxLinkDepth): LayerNode {
    let hops = 0
    const walk = (parts: string[]): LayerNode => {
      let node = this.tree.root
      let current: string[] = []
      for (let i = 0; i < parts.length; i++) {
        const part = parts[i]
        if (part === '' || part === '.') continue
        if (part === '..') {
          current.pop()
          node = this.tree.byName.get(current.join('/')) ?? this.tree.root
          continue
        }
        const child = node.type === 'dir' ? node.children?.get(part) : undefined
        if (child == null) throw new EntryNotFoundError(path)
        if (child.type === 'symlink') {
          if (++hops > maxDepth) throw new LinkLoopError(path)
          const target = child.linkName.startsWith('/') ? child.linkName.split('/') : [...current, ...child.linkName.split('/')]
          return walk([...target, ...parts.slice(i + 1)])
        }
        current = [...current, part]
        node = child
      }
      return node
    }
    return walk(path.split('/'))
  }

  /** Every node once (hardlinked files appear once), in TOC order. */
  nodes (): LayerNode[] {
    return [...new Set(this.tree.byName.values())].sort((a, b) => a.index - b.index)
  }

  /** Fetches, decompresses and verifies one chunk. Bytes that fail verification never escape. */
  async readChunk (node: LayerNode, chunk: Chunk, signal?: AbortSignal): Promise<Uint8Array> {
    const compressed = await readExactly(this.read, chunk.offset, chunk.compressedEnd - chunk.offset, signal, `chunk of ${JSON.stringify(node.name)}`)
    return await decodeChunk(compressed, node.name, chunk)
  }

  /** Reads `length` bytes at `offset` of a regular file (fewer at its end), verified. */
  async readFile (pathOrNode: string | LayerNode, offset = 0, length = Infinity, signal?: AbortSignal): Promise<Uint8Array> {
    const node = typeof pathOrNode === 'string' ? this.resolve(pathOrNode) : pathOrNode
    const name = typeof pathOrNode === 'string' ? pathOrNode : node.name
    if (node.type !== 'reg') throw new NotARegularFileError(name, node.type === 'dir' ? 'directory' : node.type)
    if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`invalid offset ${offset}`)
    const end = Math.min(node.size, offset + Math.max(0, length))
    if (end <= offset) return new Uint8Array(0)
    const out = Buffer.allocUnsafe(end - offset)
    const wanted = node.chunks.filter(c => c.chunkOffset < end && c.chunkOffset + c.chunkSize > offset)
    await Promise.all(wanted.map(async (c) => {
      const data = await this.readChunk(node, c, signal)
      const from = Math.max(offset, c.chunkOffset)
      const to = Math.min(end, c.chunkOffset + c.chunkSize)
      out.set(data.subarray(from - c.chunkOffset, to - c.chunkOffset), from - offset)
    }))
    return out
  }

  /**
   * Checks the whole blob: the TOC digest (when `tocDigest` is given), every chunk of every
   * regular file against its digest, and each file's whole-file digest.
   */
  async verify (tocDigest?: string, signal?: AbortSignal): Promise<VerifyReport> {
    if (tocDigest != null && tocDigest !== this.tocDigest) throw new TocDigestMismatchError(tocDigest, this.tocDigest)
    const report: VerifyReport = { tocDigest: this.tocDigest, entries: this.toc.entries.length, regularFiles: 0, chunks: 0, bytes: 0 }
    for (const node of this.nodes()) {
      if (node.type !== 'reg') continue
      report.regularFiles++
      const whole = new Sha256()
      for (const c of node.chunks) {
        if (signal?.aborted === true) throw new AbortError('verification aborted')
        const data = await this.readChunk(node, c, signal)
        whole.update(data)
        report.chunks++
        report.bytes += data.length
      }
      if (node.digest != null && node.chunks.length > 0) {
        const actual = whole.digest()
        if (actual !== node.digest) throw new ChunkDigestMismatchError(node.name, 0, node.digest, actual)
      }
    }
    return report
  }
}

/** Decompresses a chunk from its compressed range and checks it against its digest. */
export async function decodeChunk (compressed: Uint8Array, name: string, chunk: Chunk): Promise<Uint8Array> {
  let data: Uint8Array
  try {
    data = await inflateRange(compressed, chunk.innerOffset, chunk.chunkSize)
  } catch (err) {
    // Name the file: the bare zlib message says nothing about which chunk was bad.
    if (err instanceof TruncatedBlobError) throw new TruncatedBlobError(`chunk of ${JSON.stringify(name)} at file offset ${chunk.chunkOffset}: ${err.message}`)
    if (err instanceof MalformedGzipError) throw new MalformedGzipError(`chunk of ${JSON.stringify(name)} at file offset ${chunk.chunkOffset}: ${err.message}`)
    throw err
  }
  const actual = sha256Digest(data)
  if (actual !== chunk.digest) throw new ChunkDigestMismatchError(name, chunk.chunkOffset, chunk.digest, actual)
  return data
}

function concat (a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length)
  out.set(a)
  out.set(b, a.length)
  return out
}

async function readExactly (read: RangeRead, offset: number, length: number, signal: AbortSignal | undefined, what: string): Promise<Uint8Array> {
  if (signal?.aborted === true) throw new AbortError()
  const bytes = await read(offset, length, signal)
  if (bytes.length < length) throw new TruncatedBlobError(`blob truncated: reading the ${what} needs bytes ${offset}–${offset + length}, got ${bytes.length}`)
  return bytes.length === length ? bytes : bytes.subarray(0, length)
}
