import { LRUCache } from 'lru-cache'
import { AbortError, InvalidOptionError } from '../errors.js'
import type { RangeSource, ReadHint } from './types.js'

/** Readahead defaults, in one place. */
export const DEFAULTS = {
  /**
   * A small read that misses fetches this much from its offset; 0 disables readahead. Off by
   * default: measured on the start-up benchmark (python3 imports, blocks on a loopback peer), a
   * 512 KiB window made the run 6x slower and fetched 2x the bytes, because @helia/bitswap
   * delivers the many small blocks of a window one message each (~12–15 ms per block).
   */
  windowBytes: 0,
  /** Windows kept (LRU). */
  maxWindows: 64
} as const

export interface ReadaheadOptions {
  windowBytes?: number
  maxWindows?: number
}

interface Window { start: number, bytes: Uint8Array }

/**
 * Reads ahead of small reads: a miss fetches a whole window from its offset, and later reads
 * inside it are served from memory. A container starting up reads many small files that lie
 * next to each other in the layer (a directory's files are adjacent in the tar), so one fetch
 * — one round of bitswap wants for all the window's blocks — serves many reads that would each
 * have cost a round trip to a peer. Large reads (background fetch, big files) pass through.
 * Bytes are not verified here: the chunk reader checks every chunk's digest, as for any source.
 */
export class ReadaheadSource implements RangeSource {
  /** Windows by start offset, the least recently used dropped beyond `maxWindows`. */
  private readonly windows: LRUCache<number, Window>
  private readonly inflight = new Map<number, Promise<Window>>()
  private readonly windowBytes: number
  private sizeCache?: Promise<number>

  constructor (private readonly inner: RangeSource, options: ReadaheadOptions = {}) {
    this.windowBytes = options.windowBytes ?? DEFAULTS.windowBytes
    const maxWindows = options.maxWindows ?? DEFAULTS.maxWindows
    if (!Number.isSafeInteger(maxWindows) || maxWindows < 1) throw new InvalidOptionError(`maxWindows must be a positive integer, got ${maxWindows}`)
    this.windows = new LRUCache({ max: maxWindows })
  }

  async size (): Promise<number> {
    this.sizeCache ??= this.inner.size()
    return await this.sizeCache
  }

  async read (offset: number, length: number, signal?: AbortSignal, hint?: ReadHint): Promise<Uint8Array> {
    if (signal?.aborted === true) throw new AbortError('the read was aborted')
    if (length === 0 || this.windowBytes === 0 || length >= this.windowBytes || hint?.background === true || hint?.prefetch === true) return await this.inner.read(offset, length, signal, hint)
    const size = await this.size()
    if (offset >= size) return new Uint8Array(0)
    const end = Math.min(size, offset + length)
    for (const w of this.windows.values()) {
      if (w.start <= offset && end <= w.start + w.bytes.length) {
        this.touch(w)
        return w.bytes.subarray(offset - w.start, end - w.start)
      }
    }
    let pending = this.inflight.get(offset)
    for (const [start, p] of this.inflight) {
      if (pending != null) break
      if (start <= offset && end <= Math.min(size, start + this.windowBytes)) pending = p // a fetch under way covers it
    }
    if (pending == null) {
      // Shared by every reader that lands in this window: not tied to one reader's signal.
      pending = this.inner.read(offset, Math.min(size - offset, this.windowBytes)).then((bytes) => {
        const w = { start: offset, bytes }
        this.windows.set(offset, w)
        return w
      }).finally(() => this.inflight.delete(offset))
      this.inflight.set(offset, pending)
    }
    const w = await raceAbort(pending, signal)
    if (end > w.start + w.bytes.length) return await this.inner.read(offset, length, signal) // a short window (source changed)
    return w.bytes.subarray(offset - w.start, end - w.start)
  }

  async close (): Promise<void> {
    this.windows.clear()
    await this.inner.close?.()
  }

  /** Marks a window used (most recent). */
  private touch (w: Window): void {
    this.windows.get(w.start)
  }
}

async function raceAbort<T> (p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (signal == null) return await p
  return await new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new AbortError('the read was aborted'))
    signal.addEventListener('abort', onAbort, { once: true })
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort))
  })
}
