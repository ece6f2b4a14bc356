import { createReadStream, createWriteStream } from 'node:fs'
import { mkdtemp, open, rm } from 'node:fs/promises'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import {
  DEFAULTS, LANDMARK_CONTENTS, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_TAR_NAME
} from './constants.js'
import { EMPTY_DIGEST, Sha256, sha256Digest } from './digest.js'
import { AbortError, InvalidOptionError, PrioritizedFileNotFoundError } from './errors.js'
import { encodeFooter } from './footer.js'
import { decompressInput, detectCompression, type InputCompression } from './input.js'
import { MemberPipeline, type SegmentSink } from './members.js'
import { checkToc, checkTocExtent } from './reader.js'
import { assertSafeEntryName, cleanEntryName } from './paths.js'
import { BLOCK_SIZE, encodeMinimalRegHeader, paddedSize, type TarHeader } from './tar/header.js'
import { TarFileReader, indexTarFile, type IndexedTarEntry } from './tar/indexed.js'
import { readTarStream } from './tar/stream.js'
import { encodeToc, formatModtime, type TocEntry } from './toc.js'

export interface WriterOptions {
  /** Bytes of file data per gzip member. Default 4 MiB. */
  chunkSize?: number
  /** gzip level 0–9. Default 9. */
  compressionLevel?: number
  /**
   * Files to place first, in this order (with their parent directories and hardlink targets),
   * followed by `.prefetch.landmark`. Without them the layer starts with `.no.prefetch.landmark`.
   */
  prioritizedFiles?: string[]
  /** Skip prioritized files that are not in the layer instead of failing. */
  allowPrioritizedNotFound?: boolean
  /** Members compressed at once. Default min(4, cores). Never changes the output bytes. */
  concurrency?: number
  /** Where a compressed or streamed input is spooled when prioritized files need random access. */
  tmpDir?: string
  /**
   * What the input is compressed with. Default: told by its first bytes. A caller that already
   * decompressed the layer says `'none'`, so a tar whose first name happens to start with the
   * gzip magic is not taken for gzip.
   */
  compression?: InputCompression
  signal?: AbortSignal
}

export interface BuildResult {
  /** sha256 of the TOC JSON: the `containerd.io/snapshot/stargz/toc.digest` annotation. */
  tocDigest: string
  /** sha256 of the whole decompressed blob. */
  diffID: string
  /** Bytes of the blob. */
  size: number
  /** Bytes of the decompressed blob. */
  uncompressedSize: number
  /** Offset of the TOC member. */
  tocOffset: number
  /** Prioritized files that were not in the layer (only with `allowPrioritizedNotFound`). */
  missedPrioritizedFiles: string[]
  /** Number of TOC entries, chunk entries included. */
  entries: number
}

/** A layer: a path to a tar / tar.gz / tar.zst file, or its bytes as a stream. */
export type TarInput = string | AsyncIterable<Uint8Array>

/** An entry as the writer consumes it, from the streaming parser or an indexed tar file. */
interface SourceEntry {
  header: TarHeader
  raw: () => Promise<Uint8Array> | Uint8Array
  data: (maxPiece: number) => AsyncIterable<Uint8Array>
}

function landmark (name: string): SourceEntry {
  const header: TarHeader = {
    name, type: 'reg', mode: 0, uid: 0, gid: 0, uname: '', gname: '', size: 1, mtime: 0, linkName: '', devMajor: 0, devMinor: 0, xattrs: new Map()
  }
  return {
    header,
    raw: () => encodeMinimalRegHeader(name, 1),
    data: async function * () { yield Uint8Array.of(LANDMARK_CONTENTS) }
  }
}

/** Entries the writer replaces with its own: an old TOC and old landmarks. */
function isReserved (name: string): boolean {
  const clean = cleanEntryName(name)
  return clean === TOC_TAR_NAME || clean === PREFETCH_LANDMARK || clean === NO_PREFETCH_LANDMARK
}

function inputStream (input: TarInput): AsyncIterable<Uint8Array> {
  return typeof input === 'string' ? createReadStream(input, { highWaterMark: 1 << 20 }) : input
}

/** Streaming order: the no-prefetch landmark, then the input as it comes. */
async function * streamedEntries (input: TarInput, compression: InputCompression | undefined): AsyncGenerator<SourceEntry> {
  yield landmark(NO_PREFETCH_LANDMARK)
  const { stream } = await decompressInput(inputStream(input), compression)
  for await (const e of readTarStream(stream)) {
    if (isReserved(e.header.name)) continue
    yield { header: e.header, raw: () => e.raw, data: (maxPiece) => e.data(maxPiece) }
  }
}

/**
 * The reference's ordering with prioritized files (`sortEntries`/`moveRec` in estargz/build.go):
 * each prioritized path with its parents and hardlink target moves to the front, then the
 * `.prefetch.landmark`, then every other entry in input order. A later duplicate replaces an
 * earlier one.
 */
function prioritize (index: IndexedTarEntry[], prioritized: string[], allowNotFound: boolean, missed: string[]): Array<IndexedTarEntry | 'landmark'> {
  const rest = new Map<string, IndexedTarEntry>()
  for (const e of index) {
    if (isReserved(e.header.name)) continue
    const key = cleanEntryName(e.header.name)
    rest.delete(key)
    rest.set(key, e)
  }
  const front = new Map<string, IndexedTarEntry>()
  const move = (name: string): boolean => {
    const key = cleanEntryName(name)
    if (key === '') {
      const root = rest.get('')
      if (root != null) { front.set('', root); rest.delete('') }
      return true
    }
    if (!rest.has(key) && !front.has(key)) return false
    moveParents(key)
    const e = rest.get(key)
    if (e?.header.type === 'hardlink' && !move(e.header.linkName)) return false
    const again = rest.get(key)
    if (again != null) { front.set(key, again); rest.delete(key) }
    return true
  }
  // Unlike the reference, a parent directory missing from the tar (umoci omits them) is not an
  // error: there is simply nothing to move for it.
  const moveParents = (key: string): void => {
    const slash = key.lastIndexOf('/')
    const parent = slash < 0 ? '' : key.slice(0, slash)
    if (parent !== '') moveParents(parent)
    const e = rest.get(parent)
    if (e != null) { front.set(parent, e); rest.delete(parent) }
  }
  for (const p of prioritized) {
    if (move(p)) continue
    if (!allowNotFound) throw new PrioritizedFileNotFoundError(p)
    missed.push(p)
  }
  return [...front.values(), 'landmark', ...rest.values()]
}

async function * prioritizedEntries (plainTar: string, options: Required<Pick<WriterOptions, 'prioritizedFiles' | 'allowPrioritizedNotFound'>>, missed: string[]): AsyncGenerator<SourceEntry> {
  const order = prioritize(await indexTarFile(plainTar), options.prioritizedFiles, options.allowPrioritizedNotFound, missed)
  const file = await TarFileReader.open(plainTar)
  try {
    for (const e of order) {
      if (e === 'landmark') yield landmark(PREFETCH_LANDMARK)
      else yield { header: e.header, raw: async () => await file.raw(e), data: (maxPiece) => file.data(e, maxPiece) }
    }
  } finally {
    await file.close()
  }
}

/** Cuts a byte stream into pieces of exactly `size` bytes (the last one shorter). */
async function * exactChunks (source: AsyncIterable<Uint8Array>, size: number, total: number): AsyncGenerator<Uint8Array> {
  let parts: Uint8Array[] = []
  let have = 0
  let left = total
  for await (let piece of source) {
    while (piece.length > 0) {
      const want = Math.min(size, left) - have
      const take = piece.subarray(0, want)
      parts.push(take)
      have += take.length
      piece = piece.subarray(take.length)
      if (have === Math.min(size, left)) {
        yield parts.length === 1 ? parts[0] : Buffer.concat(parts, have)
        left -= have
        parts = []
        have = 0
      }
    }
  }
}

function resolveOptions (o: WriterOptions): { chunkSize: number, level: number, concurrency: number } {
  const chunkSize = o.chunkSize ?? DEFAULTS.chunkSize
  if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0 || chunkSize > (1 << 30)) throw new InvalidOptionError(`chunk size must be an integer between 1 and ${1 << 30}, got ${o.chunkSize}`)
  const level = o.compressionLevel ?? DEFAULTS.compressionLevel
  if (!Number.isInteger(level) || level < 0 || level > 9) throw new InvalidOptionError(`compression level must be 0–9, got ${o.compressionLevel}`)
  const concurrency = o.concurrency ?? Math.min(DEFAULTS.concurrency, availableParallelism())
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new InvalidOptionError(`concurrency must be a positive integer, got ${o.concurrency}`)
  return { chunkSize, level, concurrency }
}

/** Produces a plain tar file for random access: the input itself, or a decompressed spool. */
async function plainTarFile (input: TarInput, tmpDir: string, compression: InputCompression | undefined): Promise<{ path: string, cleanup: () => Promise<void> }> {
  if (typeof input === 'string') {
    let known = compression
    if (known == null) {
      const fh = await open(input, 'r')
      const head = Buffer.alloc(4)
      try { await fh.read(head, 0, 4, 0) } finally { await fh.close() }
      known = detectCompression(head)
    }
    if (known === 'none') return { path: input, cleanup: async () => {} }
  }
  const dir = await mkdtemp(join(tmpDir, 'estargz-spool-'))
  const cleanup = async (): Promise<void> => { await rm(dir, { recursive: true, force: true }) }
  try {
    const path = join(dir, 'layer.tar')
    const { stream } = await decompressInput(inputStream(input), compression)
    await pipeline(stream, createWriteStream(path))
    return { path, cleanup }
  } catch (err) {
    await cleanup()
    throw err
  }
}

/** One TOC entry's record while building: user/group names are resolved after de-duplication. */
interface Built {
  entry: TocEntry
  chunks: TocEntry[]
  clean: string
  uname: string
  gname: string
}

function tocEntryFor (h: TarHeader): TocEntry {
  const e: TocEntry = { name: h.name, type: h.type }
  if (h.type === 'reg') e.size = h.size
  e.modtime = formatModtime(h.mtime)
  if (h.type === 'hardlink' || h.type === 'symlink') e.linkName = h.linkName
  e.mode = h.mode
  e.uid = h.uid
  e.gid = h.gid
  if (h.type === 'char' || h.type === 'block') {
    e.devMajor = h.devMajor
    e.devMinor = h.devMinor
  }
  if (h.xattrs.size > 0) {
    e.xattrs = {}
    for (const [k, v] of h.xattrs) e.xattrs[k] = Buffer.from(v).toString('base64')
  }
  return e
}

/**
 * Keeps the last of several entries with the same (clean) name, as the reference does, and
 * writes `userName`/`groupName` only where they change for a uid/gid, in final order.
 */
function finalizeEntries (built: Built[]): TocEntry[] {
  const last = new Map<string, number>()
  built.forEach((b, i) => last.set(b.clean, i))
  const users = new Map<number, string>()
  const groups = new Map<number, string>()
  const ifChanged = (m: Map<number, string>, id: number, name: string): string | undefined => {
    if (name === '' || m.get(id) === name) return undefined
    m.set(id, name)
    return name
  }
  const out: TocEntry[] = []
  built.forEach((b, i) => {
    if (last.get(b.clean) !== i) return
    b.entry.userName = ifChanged(users, b.entry.uid ?? 0, b.uname)
    b.entry.groupName = ifChanged(groups, b.entry.gid ?? 0, b.gname)
    out.push(b.entry, ...b.chunks)
  })
  return out
}

/**
 * Converts a tar layer (plain, gzip or zstd) into an eStargz blob, handing its gzip members to
 * `sink` in order. Without prioritized files the input is streamed in one pass; with them it is
 * read twice (spooled to a temporary file first when compressed or streamed).
 *
 * Layout: every data member holds only file payload (one chunk of at most `chunkSize` bytes);
 * tar headers and padding go in members of their own, then the TOC member and the footer.
 */
export async function buildEstargz (input: TarInput, sink: SegmentSink, options: WriterOptions = {}): Promise<BuildResult> {
  const { chunkSize, level, concurrency } = resolveOptions(options)
  const signal = options.signal
  const checkAbort = (): void => { if (signal?.aborted === true) throw new AbortError('eStargz build aborted') }
  const missed: string[] = []
  const prioritized = options.prioritizedFiles ?? []
  let spool: { path: string, cleanup: () => Promise<void> } | undefined
  try {
    let source: AsyncIterable<SourceEntry>
    if (prioritized.length > 0) {
      spool = await plainTarFile(input, options.tmpDir ?? tmpdir(), options.compression)
      source = prioritizedEntries(spool.path, { prioritizedFiles: prioritized, allowPrioritizedNotFound: options.allowPrioritizedNotFound ?? false }, missed)
    } else {
      source = streamedEntries(input, options.compression)
    }

    const members = new MemberPipeline(level, concurrency, chunkSize, sink)
    const diff = new Sha256()
    let uncompressedSize = 0
    let pending: Uint8Array[] = []
    let pendingBytes = 0
    const add = async (kind: 'header' | 'data' | 'toc', bytes: Uint8Array, onPlaced?: (offset: number) => void): Promise<void> => {
      diff.update(bytes)
      uncompressedSize += bytes.length
      await members.add(kind, bytes, onPlaced)
    }
    const flushPending = async (): Promise<void> => {
      if (pendingBytes === 0) return
      const bytes = pending.length === 1 ? pending[0] : Buffer.concat(pending, pendingBytes)
      pending = []
      pendingBytes = 0
      await add('header', bytes)
    }
    const queueHeaderBytes = async (bytes: Uint8Array): Promise<void> => {
      pending.push(bytes)
      pendingBytes += bytes.length
      if (pendingBytes >= chunkSize) await flushPending() // keep header members bounded too
    }

    const built: Built[] = []
    for await (const e of source) {
      checkAbort()
      const h = e.header
      assertSafeEntryName(h.name)
      if (h.type === 'hardlink') assertSafeEntryName(h.linkName)
      const entry = tocEntryFor(h)
      const record: Built = { entry, chunks: [], clean: cleanEntryName(h.name), uname: h.uname, gname: h.gname }
      built.push(record)
      await queueHeaderBytes(await e.raw())
      if (h.type !== 'reg') continue
      if (h.size === 0) {
        entry.digest = EMPTY_DIGEST
        continue
      }
      const file = new Sha256()
      let written = 0
      for await (const chunk of exactChunks(e.data(Math.min(chunkSize, 1 << 20)), chunkSize, h.size)) {
        checkAbort()
        await flushPending()
        const c: TocEntry = written === 0 ? entry : { name: h.name, type: 'chunk' }
        c.chunkOffset = written
        // The reference records chunkSize whenever a full chunk was cut, even for the last one.
        if (h.size - written >= chunkSize) c.chunkSize = chunkSize
        c.chunkDigest = sha256Digest(chunk)
        if (h.size > chunkSize) file.update(chunk)
        if (written > 0) record.chunks.push(c)
        written += chunk.length
        await add('data', chunk, (offset) => { c.offset = offset })
      }
      entry.digest = h.size <= chunkSize ? entry.chunkDigest : file.digest()
      const pad = paddedSize(h.size) - h.size
      if (pad > 0) await queueHeaderBytes(new Uint8Array(pad))
    }
    checkAbort()
    await flushPending()
    await members.flush() // every data member placed: all TOC offsets are known

    const entries = finalizeEntries(built)
    const tocJson = encodeToc({ version: 1, entries })
    // Refuse now what every reader would refuse at mount time (a path through a symlink, a
    // hardlink to nothing, an id the TOC cannot hold, ...): the reader's own checks, on the TOC
    // bytes it would read, before the TOC and footer go out.
    checkToc(tocJson, members.offset)
    const tocDigest = sha256Digest(tocJson)
    const tocTar = Buffer.alloc(BLOCK_SIZE + paddedSize(tocJson.length) + 2 * BLOCK_SIZE)
    tocTar.set(encodeMinimalRegHeader(TOC_TAR_NAME, tocJson.length), 0)
    tocTar.set(tocJson, BLOCK_SIZE)
    let tocOffset = -1
    await add('toc', tocTar, (offset) => { tocOffset = offset })
    await members.flush()
    checkTocExtent(tocOffset, members.offset)
    await members.addRaw('footer', encodeFooter(tocOffset))
    return {
      tocDigest,
      diffID: diff.digest(),
      size: members.offset,
      uncompressedSize,
      tocOffset,
      missedPrioritizedFiles: missed,
      entries: entries.length
    }
  } finally {
    await spool?.cleanup()
  }
}
