import { randomBytes } from 'node:crypto'
import { mkdir, open, readdir, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { LRUCache } from 'lru-cache'
import { sha256Digest } from '../estargz/index.js'
import { DEFAULTS } from './config.js'
import type { Logger } from '../logging.js'
import { OpenLru } from '../open-lru.js'
import { PRIVATE } from '../private-files.js'

/** A byte-capped LRU of buffers (an empty buffer counts as one byte: lru-cache sizes are positive). */
export class MemoryLru {
  /** undefined: a cap of 0 bytes, nothing is kept. */
  private readonly entries?: LRUCache<string, Uint8Array>

  constructor (readonly maxBytes: number) {
    if (maxBytes > 0) this.entries = new LRUCache({ maxSize: maxBytes, sizeCalculation: v => Math.max(1, v.length) })
  }

  get (key: string): Uint8Array | undefined {
    return this.entries?.get(key)
  }

  has (key: string): boolean {
    return this.entries?.has(key) ?? false
  }

  set (key: string, value: Uint8Array): void {
    if (this.entries == null || value.length > this.maxBytes) return
    // A view into a bigger buffer (a slice of a coalesced fetch or of inflate's output) would
    // keep that whole buffer alive while being counted at its own length: 16 MiB of entries
    // held 53 MB. Keep an exact copy instead.
    // (Buffer#slice does not copy: copy by hand.)
    if (value.byteOffset !== 0 || value.byteLength !== value.buffer.byteLength) {
      const copy = new Uint8Array(value.byteLength)
      copy.set(value)
      value = copy
    }
    this.entries.set(key, value)
  }

  delete (key: string): void {
    this.entries?.delete(key)
  }

  get bytes (): number {
    return this.entries?.calculatedSize ?? 0
  }
}

export interface ChunkCacheOptions {
  /** Directory of the disk cache; without it only the memory cache is used. */
  dir?: string
  /** Cap of the disk cache in bytes. */
  maxBytes?: number
  /** Cap of the memory cache in bytes. */
  memoryBytes?: number
  /** Hash chunk files this process did not write before trusting them. */
  verifyOnLoad?: boolean
}

export interface ChunkCacheComponents {
  logger: Logger
}

export interface ChunkCacheStats {
  diskBytes: number
  diskEntries: number
  memoryBytes: number
  evictions: number
  /** Chunk files found corrupt on load and removed. */
  corruptFiles: number
  /**
   * Chunk writes that failed (a full disk, a removed cache directory): the chunk stays in memory
   * only, the read that brought it is not failed; each is logged too.
   */
  writeFailures: number
  /** Reads of a chunk's range answered from memory or disk, and their bytes; reads that missed. */
  hits: number
  hitBytes: number
  misses: number
}

const HEX = /^[0-9a-f]{64}$/

function hexOf (digest: string): string {
  const hex = digest.startsWith('sha256:') ? digest.slice(7) : ''
  if (!HEX.test(hex)) throw new RangeError(`not a sha256 digest: ${digest}`)
  return hex
}

/**
 * Verified, decompressed chunks, content-addressed by `chunkDigest`: a small memory LRU in
 * front of a directory `<dir>/<hex[0:2]>/<hex>` capped in bytes with LRU eviction. Files are
 * written to a temporary name and renamed, so a crash never leaves a partial chunk under its
 * final name; the directory survives restarts. Because names are content addresses, one
 * cache can (and should) be shared by every layer: identical files are stored once.
 *
 * Trust: what this process wrote it verified before writing. A file found on disk at start
 * is hashed once on first use (`verifyOnLoad`) and removed if it does not match its name;
 * after that it is served by range without rehashing.
 */
export class ChunkCache {
  private readonly memory: MemoryLru
  private readonly dir?: string
  private readonly maxBytes: number
  private readonly verifyOnLoad: boolean
  private readonly log: Logger
  /**
   * Disk entries by hex digest → size (an empty file counts as one byte), the least recently used
   * evicted beyond `maxBytes`: its file is removed, its handle closed.
   */
  private readonly index: LRUCache<string, number>
  /** Entries whose file content is known to match the name. */
  private readonly trusted = new Set<string>()
  private readonly writing = new Map<string, Promise<void>>()
  /** Fan-out directories (and tmp) known to exist: a chunk write makes its own only the first time. */
  private readonly madeDirs = new Set<string>()
  /** Removals of evicted files under way. */
  private readonly removing = new Set<Promise<void>>()
  /**
   * Open chunk files, most recently used kept: a sequential read through the mount asks for the
   * same chunk file many times in 128 KiB requests, and open + close around each read cost more
   * than the read. FileHandle.close() waits for reads in flight, so evicting a handle never makes
   * a read hit a reused descriptor; a read that starts after the close gets EBADF and reopens.
   */
  private readonly handles = new OpenLru<FileHandle>({ max: DEFAULTS.openChunkFiles, close: async (fh) => { await fh.close() } })
  private evictions = 0
  private corruptFiles = 0
  private writeFailures = 0
  private hits = 0
  private hitBytes = 0
  private misses = 0
  private started = false

  constructor (components: ChunkCacheComponents, options: ChunkCacheOptions = {}) {
    this.log = components.logger
    this.dir = options.dir
    this.maxBytes = options.maxBytes ?? DEFAULTS.diskCacheBytes
    this.index = new LRUCache<string, number>({
      // a cap of 0 keeps nothing but empty files: put() and start() never add what is over the cap
      maxSize: Math.max(1, this.maxBytes),
      sizeCalculation: size => Math.max(1, size),
      dispose: (_size, hex, reason) => { this.dropped(hex, reason === 'evict') }
    })
    this.memory = new MemoryLru(options.memoryBytes ?? DEFAULTS.memoryCacheBytes)
    this.verifyOnLoad = options.verifyOnLoad ?? DEFAULTS.verifyDiskCacheOnLoad
  }

  /** Creates the directory, indexes what an earlier run left (oldest first), drops temp files. */
  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    if (this.dir == null) return
    // Cached chunks are image files' contents: owner-only, whatever the umask.
    await mkdir(join(this.dir, 'tmp'), { recursive: true, mode: PRIVATE.dirMode })
    await rm(join(this.dir, 'tmp'), { recursive: true, force: true })
    await mkdir(join(this.dir, 'tmp'), { recursive: true, mode: PRIVATE.dirMode })
    this.madeDirs.add('tmp')
    const found: Array<{ hex: string, size: number, mtime: number }> = []
    for (const sub of await readdir(this.dir)) {
      if (!/^[0-9a-f]{2}$/.test(sub)) continue
      this.madeDirs.add(sub)
      for (const name of await readdir(join(this.dir, sub))) {
        if (!HEX.test(name) || !name.startsWith(sub)) continue
        const st = await stat(join(this.dir, sub, name)).catch(() => undefined)
        if (st?.isFile() === true) found.push({ hex: name, size: st.size, mtime: st.mtimeMs })
      }
    }
    // oldest first: what does not fit under the cap is evicted, the least recently written first
    found.sort((a, b) => a.mtime - b.mtime)
    for (const f of found) {
      if (f.size > this.maxBytes) {
        this.evictions++
        this.remove(f.hex)
        continue
      }
      this.index.set(f.hex, f.size)
      if (!this.verifyOnLoad) this.trusted.add(f.hex)
    }
    await this.removed()
    this.log.debug({ dir: this.dir, entries: this.index.size, bytes: this.index.calculatedSize }, 'chunk cache opened')
  }

  /** Waits for pending writes, closes the open chunk files. */
  async stop (): Promise<void> {
    await Promise.allSettled([...this.writing.values()])
    await this.removed()
    await this.handles.clear()
  }

  /** True when the chunk is cached (memory or disk). */
  has (digest: string): boolean {
    const hex = hexOf(digest)
    return this.memory.has(hex) || this.index.has(hex)
  }

  /** The whole chunk, or undefined on a miss. */
  async get (digest: string): Promise<Uint8Array | undefined> {
    const hex = hexOf(digest)
    const mem = this.memory.get(hex)
    if (mem != null) return mem
    const size = this.index.get(hex)
    if (size == null || this.dir == null) return undefined
    const data = await this.readFile(hex, 0, size)
    if (data == null) return undefined
    if (!this.trusted.has(hex)) {
      if (data.length !== size || sha256Digest(data) !== digest) {
        await this.drop(hex, 'content does not match its digest')
        return undefined
      }
      this.trusted.add(hex)
    }
    this.touch(hex)
    this.memory.set(hex, data)
    return data
  }

  /** `length` bytes at `offset` of a cached chunk, or undefined on a miss. */
  async read (digest: string, offset: number, length: number): Promise<Uint8Array | undefined> {
    const data = await this.readRange(digest, offset, length)
    if (data == null) this.misses++
    else { this.hits++; this.hitBytes += data.length }
    return data
  }

  private async readRange (digest: string, offset: number, length: number): Promise<Uint8Array | undefined> {
    const hex = hexOf(digest)
    const mem = this.memory.get(hex)
    if (mem != null) return mem.subarray(offset, offset + length)
    if (!this.index.has(hex)) return undefined
    if (!this.trusted.has(hex)) return (await this.get(digest))?.subarray(offset, offset + length)
    const data = await this.readFile(hex, offset, length)
    if (data == null || data.length < length) return undefined
    this.touch(hex)
    return data
  }

  /**
   * Stores a verified chunk: in memory at once, on disk before the promise resolves. The
   * caller must have checked `data` against `digest`.
   */
  async put (digest: string, data: Uint8Array): Promise<void> {
    const hex = hexOf(digest)
    this.memory.set(hex, data)
    if (this.dir == null || this.index.has(hex) || data.length > this.maxBytes) return
    const pending = this.writing.get(hex)
    if (pending != null) return await pending
    const p = this.writeFile(hex, data).finally(() => this.writing.delete(hex))
    this.writing.set(hex, p)
    await p
  }

  /**
   * Removes the disk entries `keep` refuses (by hex digest), and every memory entry with them;
   * with `dryRun`, only counts them. Writes under way are left alone (they are in use).
   */
  async sweep (keep: (hex: string) => boolean, options: { dryRun?: boolean } = {}): Promise<{ entries: number, bytes: number }> {
    let entries = 0
    let bytes = 0
    for (const [hex, size] of [...this.index.entries()]) {
      if (keep(hex) || this.writing.has(hex)) continue
      entries++
      bytes += size
      if (options.dryRun === true) continue
      this.forget(hex)
      this.memory.delete(hex)
      await unlink(this.pathOf(hex)).catch(() => {})
    }
    return { entries, bytes }
  }

  /** Every disk entry (hex digest, bytes). */
  entries (): Array<[string, number]> {
    return [...this.index.entries()]
  }

  stats (): ChunkCacheStats {
    return { diskBytes: this.index.calculatedSize, diskEntries: this.index.size, memoryBytes: this.memory.bytes, evictions: this.evictions, corruptFiles: this.corruptFiles, writeFailures: this.writeFailures, hits: this.hits, hitBytes: this.hitBytes, misses: this.misses }
  }

  private pathOf (hex: string): string {
    return join(this.dir ?? '', hex.slice(0, 2), hex)
  }

  /** Marks a disk entry used (most recent). */
  private touch (hex: string): void {
    this.index.get(hex)
  }

  private async readFile (hex: string, offset: number, length: number, retry = true): Promise<Uint8Array | undefined> {
    let fh
    try {
      fh = await this.handles.get(hex, async () => await open(this.pathOf(hex), 'r'))
    } catch (err) {
      // Evicted (or removed by hand) between the index check and the open: a miss (Node's errno).
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.forget(hex)
        return undefined
      }
      throw err
    }
    try {
      const buf = Buffer.allocUnsafe(length)
      let got = 0
      while (got < length) {
        const { bytesRead } = await fh.read(buf, got, length - got, offset + got)
        if (bytesRead === 0) break
        got += bytesRead
      }
      return got === length ? buf : buf.subarray(0, got)
    } catch (err) {
      // The handle was closed under us (evicted from the handle cache; Node's errno): open it again, once.
      if ((err as NodeJS.ErrnoException).code === 'EBADF' && retry) return await this.readFile(hex, offset, length, false)
      throw err
    }
  }

  private async writeFile (hex: string, data: Uint8Array, retry = true): Promise<void> {
    const dir = this.dir ?? ''
    const tmp = join(dir, 'tmp', `${hex}.${randomBytes(4).toString('hex')}`)
    const sub = hex.slice(0, 2)
    try {
      for (const d of ['tmp', sub]) {
        if (this.madeDirs.has(d)) continue
        await mkdir(join(dir, d), { recursive: true, mode: PRIVATE.dirMode })
        this.madeDirs.add(d)
      }
      const fh = await open(tmp, 'wx', PRIVATE.fileMode)
      try {
        await fh.writeFile(data)
      } finally {
        await fh.close()
      }
      await rename(tmp, this.pathOf(hex))
    } catch (err) {
      // force covers a missing file, not a path through a non-directory (ENOTDIR): never throw here
      await rm(tmp, { force: true }).catch(() => {})
      // A directory of ours is gone (removed by hand, or the disk replaced under a running
      // cache): every one known may be, so all are made again, and the write tried once more.
      // Without this every later write into a directory once made would fail (Node's errno).
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && retry) {
        this.madeDirs.clear()
        return await this.writeFile(hex, data, false)
      }
      // A full disk or a removed cache dir degrades to "not cached"; reads still work.
      this.writeFailures++
      this.log.warn({ err, chunk: hex }, 'cannot write chunk to the disk cache')
      return
    }
    if (!this.index.has(hex)) this.index.set(hex, data.length) // evicts beyond the cap
    this.trusted.add(hex)
    await this.removed()
  }

  /** Forgets a disk entry whose file is gone or is being removed by the caller. */
  private forget (hex: string): void {
    this.index.delete(hex)
    this.handles.delete(hex)
  }

  /** A disk entry left the index: its handle is closed; an evicted one's file is removed. */
  private dropped (hex: string, evicted: boolean): void {
    this.handles.delete(hex)
    this.trusted.delete(hex)
    if (!evicted) return
    this.evictions++
    this.remove(hex)
  }

  private remove (hex: string): void {
    const p = unlink(this.pathOf(hex)).catch(() => {})
    this.removing.add(p)
    void p.finally(() => this.removing.delete(p))
  }

  /** Waits for the removals of evicted files under way. */
  private async removed (): Promise<void> {
    await Promise.allSettled([...this.removing])
  }

  private async drop (hex: string, why: string): Promise<void> {
    this.corruptFiles++
    this.log.warn({ chunk: hex, reason: why }, 'removing corrupt chunk from the disk cache')
    this.forget(hex)
    await unlink(this.pathOf(hex)).catch(() => {})
  }
}
