import { LRUCache } from 'lru-cache'
import { InvalidOptionError } from './errors.js'

export interface OpenLruOptions<V> {
  /** Resources kept open at most; the least recently used is closed for a new one. */
  max: number
  /** Closes a resource that left the cache (evicted, deleted, cleared). */
  close: (value: V) => Promise<void>
  /** A close that failed: nothing can be done about it but say so. */
  onCloseError?: (err: unknown) => void
}

/**
 * Open resources by key, the most recently used kept: for what costs more to open than to use
 * (a chunk file read 128 KiB at a time, an IPFS blob whose root a source caches). Callers that
 * ask for a key while it is being opened share that open. A failed open is not kept: the next
 * caller opens again. What leaves the cache is closed once its open has finished, so a resource
 * opened for a caller is never left open and unowned.
 */
export class OpenLru<V> {
  private readonly cache: LRUCache<string, Promise<V>>
  /** Closes under way, so `clear()` can wait for them. */
  private readonly closing = new Set<Promise<void>>()

  constructor (private readonly options: OpenLruOptions<V>) {
    if (!Number.isSafeInteger(options.max) || options.max < 1) throw new InvalidOptionError(`an open-resource cache must hold at least 1 entry, got ${options.max}`)
    this.cache = new LRUCache<string, Promise<V>>({ max: options.max, dispose: (opening) => { this.release(opening) } })
  }

  /** The resource under `key`, opened with `open` unless it is open or being opened. */
  async get (key: string, open: () => Promise<V>): Promise<V> {
    let p = this.cache.get(key)
    if (p == null) {
      const opening = open()
      p = opening
      this.cache.set(key, opening)
      opening.catch(() => { if (this.cache.peek(key) === opening) this.cache.delete(key) })
    }
    return await p
  }

  /** Closes the resource under `key`, if any. */
  delete (key: string): void {
    this.cache.delete(key)
  }

  /** Closes every resource, waiting for the closes (also those of earlier evictions). */
  async clear (): Promise<void> {
    this.cache.clear()
    await Promise.allSettled([...this.closing])
  }

  private release (opening: Promise<V>): void {
    const closed = opening.then(async (v) => { await this.options.close(v) }, () => {}).catch((err: unknown) => this.options.onCloseError?.(err))
    this.closing.add(closed)
    void closed.finally(() => this.closing.delete(closed))
  }
}
