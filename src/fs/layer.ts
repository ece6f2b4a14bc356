import { EstargzReader, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_TAR_NAME, type LayerNode, type NodeType } from '../estargz/index.js'
import type { Activity } from './activity.js'
import { ChunkCache } from './cache.js'
import { ChunkReader, chunksInBlobOrder, type ReaderStats } from './chunk-reader.js'
import { DEFAULTS } from './config.js'
import {
  FsClosedError, InvalidOperationError, IsADirectoryError, NoEntryError, NoXattrError, NotADirectoryError, ReadOnlyError,
  VerificationRequiredError
} from './errors.js'
import { Prefetcher, type PrefetchOptions, type PrefetchStatus } from './prefetch.js'
import type { Logger } from '../logging.js'
import type { RangeSource } from '../source/index.js'

export interface LayerFsComponents {
  source: RangeSource
  logger: Logger
  /** Shared content-addressed chunk cache; a memory-only one when omitted. */
  cache?: ChunkCache
  /** On-demand work of the process, shared by its layers (background fetches yield to it). */
  activity?: Activity
  /**
   * The layer's TOC member, readable apart from the blob (in IPFS its own leaf, which the
   * layer's annotations name), and its offset in the blob: the open skips the footer read.
   * Checked like everything else; the open reads the footer when it does not hold.
   */
  tocMember?: { offset: number, source: RangeSource, onRefused?: (err: Error) => void }
}

export interface LayerFsOptions extends PrefetchOptions {
  /** sha256 of the TOC JSON the caller trusts (the layer annotation). */
  tocDigest?: string
  /** Mount without `tocDigest` (the TOC is then taken on faith; chunks are still verified against it). */
  allowNoVerification?: boolean
  fetchTimeoutMs?: number
  maxCoalesceBytes?: number
  readWindowBytes?: number
  neighbourBytes?: number
  /** Bytes read from the blob's end when it opens (footer and, when it fits, the TOC). */
  openTailBytes?: number
  opaqueXattrs?: readonly string[]
  blockSize?: number
  signal?: AbortSignal
  /**
   * Called on every open of a file, with its path in the layer (no leading slash): how a
   * workload's file accesses are recorded. Off by default.
   */
  onAccess?: (path: string) => void
}

/** One name in the view: a layer node, or an overlayfs whiteout made from a `.wh.` entry. */
export interface Entry {
  ino: number
  /** Base name (`''` for the root). */
  name: string
  node: LayerNode
  /** Parent directory (the root is its own parent). */
  parent: Entry
  /** True for the char device 0:0 standing for a `.wh.NAME` entry. */
  whiteout: boolean
}

export interface Attr {
  ino: number
  /** File type (S_IFMT bits) and permissions. */
  mode: number
  uid: number
  gid: number
  size: number
  nlink: number
  rdev: number
  blksize: number
  /** 512-byte blocks. */
  blocks: number
  /** Modification time in milliseconds (also used for atime and ctime). */
  mtimeMs: number
}

export interface DirEntry {
  name: string
  entry: Entry
}

export interface StatFs {
  bsize: number
  frsize: number
  blocks: number
  bfree: number
  bavail: number
  files: number
  ffree: number
  favail: number
  fsid: number
  flag: number
  namemax: number
}

export interface LayerFsStats extends ReaderStats {
  prefetch: PrefetchStatus
}

const IFMT: Record<NodeType, number> = { dir: 0o040000, reg: 0o100000, symlink: 0o120000, char: 0o020000, block: 0o060000, fifo: 0o010000 }
const IFCHR = 0o020000
const WHITEOUT_PREFIX = '.wh.'
const OPAQUE_WHITEOUT = '.wh..wh..opq'
const ST_RDONLY = 1
const O_ACCMODE = 3
const O_TRUNC = 0o1000
const O_CREAT = 0o100
/** Names the format puts in the root for its own use; not part of the layer's content. */
const HIDDEN_IN_ROOT = new Set([TOC_TAR_NAME, PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK])

/** Linux `makedev` for the 32-bit st_rdev FUSE passes (same as glibc's encoding for these ranges). */
export function makedev (major: number, minor: number): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0
}

const byBytes = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b))

/**
 * A read-only filesystem view of one eStargz layer, independent of FUSE: stable inode
 * numbers, attributes, lookups, directory listings, symlinks, xattrs, hardlinks as one inode,
 * whiteouts in overlayfs form, and verified file reads through the {@link ChunkReader}.
 */
export class LayerFs {
  readonly reader: ChunkReader
  readonly prefetcher: Prefetcher
  readonly root: Entry
  private readonly inodes = new Map<LayerNode, number>()
  private readonly listings = new WeakMap<Entry, { children: Map<string, Entry>, opaque: boolean }>()
  private readonly paths = new Map<string, Entry>()
  private readonly opaqueXattrs: readonly string[]
  private readonly blockSize: number
  private readonly log: Logger
  private readonly onAccess?: (path: string) => void
  private closed = false

  private constructor (readonly estargz: EstargzReader, components: LayerFsComponents, private readonly cache: ChunkCache, options: LayerFsOptions) {
    this.log = components.logger
    this.opaqueXattrs = options.opaqueXattrs ?? DEFAULTS.opaqueXattrs
    this.blockSize = options.blockSize ?? DEFAULTS.blockSize
    this.onAccess = options.onAccess
    // every node once (hardlinks are several names of one node)
    const nodes = new Set(estargz.tree.byName.values())
    const layout = chunksInBlobOrder(nodes)
    this.reader = new ChunkReader({ source: components.source, cache, logger: this.log, layout, ...(components.activity != null ? { activity: components.activity } : {}) }, options)
    this.prefetcher = new Prefetcher({ reader: this.reader, tree: estargz.tree, logger: this.log, layout }, options)
    // Inodes: 1 for the root; TOC entry index + 2 for listed nodes (stable for a given blob);
    // directories only implied by paths are numbered after every entry, in name order.
    const base = estargz.toc.entries.length + 2
    const implicit: LayerNode[] = []
    for (const node of nodes) {
      if (node === estargz.tree.root) continue
      if (node.implicit === true) implicit.push(node)
      else this.inodes.set(node, node.index + 2)
    }
    implicit.sort((a, b) => byBytes(a.name, b.name)).forEach((n, i) => this.inodes.set(n, base + i))
    this.inodes.set(estargz.tree.root, 1)
    const root: Entry = { ino: 1, name: '', node: estargz.tree.root, parent: undefined as unknown as Entry, whiteout: false }
    root.parent = root
    this.root = root
    this.paths.set('/', root)
  }

  /**
   * Opens a layer: footer and TOC from the source (checked against `tocDigest`). Refuses a
   * layer without a trusted TOC digest unless `allowNoVerification` is set.
   */
  static async open (components: LayerFsComponents, options: LayerFsOptions = {}): Promise<LayerFs> {
    if (options.tocDigest == null && options.allowNoVerification !== true) throw new VerificationRequiredError()
    const source = components.source
    const size = await source.size()
    const hint = components.tocMember
    const tocMember = hint != null
      ? { offset: hint.offset, read: async (length: number, signal?: AbortSignal) => await hint.source.read(0, length, signal) }
      : undefined
    const estargz = await EstargzReader.open(async (o, l, s) => await source.read(o, l, s), size, {
      tocDigest: options.tocDigest,
      tailBytes: options.openTailBytes ?? DEFAULTS.openTailBytes,
      signal: options.signal,
      ...(tocMember != null ? { tocMember } : {}),
      onHintRefused: (err) => {
        components.logger.info({ err: err.message }, 'the layer\'s TOC hint does not hold; reading its footer')
        hint?.onRefused?.(err)
      }
    })
    if (options.tocDigest == null) components.logger.warn({ tocDigest: estargz.tocDigest }, 'mounting a layer without TOC verification')
    const cache = components.cache ?? new ChunkCache({ logger: components.logger })
    return new LayerFs(estargz, components, cache, options)
  }

  /** Starts the prefetch (waiting for it with `waitForPrefetchAtMount`) and, after it, the background fetch. */
  async start (): Promise<void> {
    await this.cache.start()
    await this.prefetcher.start()
  }

  /** Waits (up to the prefetch timeout) until the prioritized files are cached: a workload is about to start. */
  async waitForPrefetch (): Promise<void> {
    await this.prefetcher.waitForPrioritized()
  }

  async stop (): Promise<void> {
    this.closed = true
    await this.prefetcher.stop()
  }

  stats (): LayerFsStats {
    return { ...this.reader.stats(), prefetch: this.prefetcher.progress() }
  }

  // ---- names ----

  /** The entry at an absolute path of the view (as FUSE passes them). */
  resolve (path: string): Entry {
    const hit = this.paths.get(path)
    if (hit != null) return hit
    let entry = this.root
    let walked = ''
    for (const part of path.split('/')) {
      if (part === '' || part === '.') continue
      walked += '/' + part
      entry = part === '..' ? entry.parent : this.lookup(entry, part, walked)
    }
    this.paths.set(path, entry)
    return entry
  }

  /** The child `name` of a directory entry. */
  lookup (dir: Entry, name: string, path = name): Entry {
    if (dir.node.type !== 'dir') throw new NotADirectoryError(path)
    const child = this.listing(dir).children.get(name)
    if (child == null) throw new NoEntryError(path)
    return child
  }

  /** Directory listing in byte order, with `.` and `..` first. */
  readdir (dir: Entry): DirEntry[] {
    if (dir.node.type !== 'dir') throw new NotADirectoryError(dir.name)
    const out: DirEntry[] = [{ name: '.', entry: dir }, { name: '..', entry: dir.parent }]
    for (const [name, entry] of this.listing(dir).children) out.push({ name, entry })
    return out
  }

  // ---- attributes ----

  getattr (entry: Entry): Attr {
    const n = entry.node
    if (entry.whiteout) {
      return { ino: entry.ino, mode: IFCHR, uid: 0, gid: 0, size: 0, nlink: 1, rdev: 0, blksize: this.blockSize, blocks: 0, mtimeMs: n.mtime * 1000 }
    }
    const size = n.type === 'reg' || n.type === 'symlink' ? n.size : 0
    return {
      ino: entry.ino,
      // Linux symlinks are always 0777 (tar -x and the kernel ignore the tar header's mode).
      mode: IFMT[n.type] | (n.type === 'symlink' ? 0o777 : n.mode),
      uid: n.uid,
      gid: n.gid,
      size,
      nlink: Math.max(1, n.numLink),
      rdev: n.type === 'char' || n.type === 'block' ? makedev(n.devMajor, n.devMinor) : 0,
      blksize: this.blockSize,
      blocks: Math.ceil(size / this.blockSize) * (this.blockSize / 512),
      mtimeMs: n.mtime * 1000
    }
  }

  readlink (entry: Entry): string {
    if (entry.whiteout || entry.node.type !== 'symlink') throw new InvalidOperationError(`not a symlink: ${JSON.stringify(this.pathOf(entry))}`)
    return entry.node.linkName
  }

  listxattr (entry: Entry): string[] {
    if (entry.whiteout) return []
    const names = [...entry.node.xattrs.keys()]
    if (entry.node.type === 'dir' && this.listing(entry).opaque) {
      for (const x of this.opaqueXattrs) if (!names.includes(x)) names.push(x)
    }
    return names
  }

  getxattr (entry: Entry, name: string): Uint8Array {
    if (!entry.whiteout) {
      if (entry.node.type === 'dir' && this.opaqueXattrs.includes(name) && this.listing(entry).opaque) return Uint8Array.of(0x79) // 'y'
      const v = entry.node.xattrs.get(name)
      if (v != null) return v
    }
    throw new NoXattrError(this.pathOf(entry), name)
  }

  statfs (): StatFs {
    let bytes = 0
    let files = 0
    for (const n of new Set(this.estargz.tree.byName.values())) {
      files++
      bytes += n.type === 'reg' ? n.size : 0
    }
    const blocks = Math.ceil(bytes / this.blockSize)
    return { bsize: this.blockSize, frsize: this.blockSize, blocks, bfree: 0, bavail: 0, files, ffree: 0, favail: 0, fsid: 0, flag: ST_RDONLY, namemax: 255 }
  }

  // ---- file access ----

  /** Checks that an open with these flags is allowed (read-only, not a directory). */
  open (entry: Entry, flags: number): void {
    if ((flags & O_ACCMODE) !== 0 || (flags & (O_TRUNC | O_CREAT)) !== 0) throw new ReadOnlyError('open for writing', this.pathOf(entry))
    if (entry.node.type === 'dir' && !entry.whiteout) throw new IsADirectoryError(this.pathOf(entry))
    if (this.onAccess != null) this.onAccess(this.pathOf(entry).slice(1))
  }

  /** Verified file bytes; fewer than `length` only at the end of the file. */
  async read (entry: Entry, offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    if (this.closed) throw new FsClosedError()
    if (entry.node.type === 'dir') throw new IsADirectoryError(this.pathOf(entry))
    if (entry.whiteout || entry.node.type !== 'reg') throw new InvalidOperationError(`not a regular file: ${JSON.stringify(this.pathOf(entry))}`)
    return await this.reader.read(entry.node, offset, length, { signal })
  }

  /** Any modifying operation. */
  refuseWrite (operation: string, path = ''): never {
    throw new ReadOnlyError(operation, path)
  }

  pathOf (entry: Entry): string {
    const parts: string[] = []
    for (let e = entry; e !== this.root; e = e.parent) parts.unshift(e.name)
    return '/' + parts.join('/')
  }

  /**
   * The overlayfs view of a directory: `.wh..wh..opq` hidden and turned into the opaque flag,
   * `.wh.NAME` hidden and shown as a whiteout NAME unless a real NAME exists, and the
   * format's own files hidden in the root.
   */
  private listing (dir: Entry): { children: Map<string, Entry>, opaque: boolean } {
    const memo = this.listings.get(dir)
    if (memo != null) return memo
    const real = new Map<string, Entry>()
    const whiteouts: Array<[string, LayerNode]> = []
    let opaque = false
    const isRoot = dir === this.root
    for (const [name, node] of dir.node.children ?? []) {
      if (isRoot && HIDDEN_IN_ROOT.has(name)) continue
      if (name === OPAQUE_WHITEOUT) {
        opaque = true
        continue
      }
      if (name.startsWith(WHITEOUT_PREFIX)) {
        if (name.length > WHITEOUT_PREFIX.length) whiteouts.push([name.slice(WHITEOUT_PREFIX.length), node])
        continue
      }
      real.set(name, { ino: this.inodeOf(node), name, node, parent: dir, whiteout: false })
    }
    for (const [name, node] of whiteouts) {
      if (!real.has(name)) real.set(name, { ino: this.inodeOf(node), name, node, parent: dir, whiteout: true })
    }
    const children = new Map([...real].sort((a, b) => byBytes(a[0], b[0])))
    const listing = { children, opaque }
    this.listings.set(dir, listing)
    return listing
  }

  private inodeOf (node: LayerNode): number {
    const ino = this.inodes.get(node)
    if (ino == null) throw new Error(`no inode for ${JSON.stringify(node.name)}`)
    return ino
  }
}
