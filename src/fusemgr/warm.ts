import type { LayerFs } from '../fs/index.js'
import type { Logger } from '../logging.js'
import type { RangeSource } from '../source/index.js'
import type { MountSettings, WarmStats } from './api.js'

/** A layer opened ahead of its mount: its footer and TOC are read and verified. */
export interface Opened {
  fs: LayerFs
  /** The source `fs` reads through; the mount takes it over. */
  source: RangeSource
}

export interface WarmCacheOptions {
  /** Opened layers kept at most; the oldest is dropped for a new one. */
  maxLayers: number
  /** An opened layer no mount took within this long is dropped. */
  ttlMs: number
}

interface Entry {
  opened: Promise<Opened>
  expires: number
}

/** The key of an opened layer: a mount uses it only for the same CID, TOC digest and settings. */
export function warmKey (cid: string, tocDigest: string, settings: MountSettings = {}): string {
  // code-unit order: `localeCompare`'s first call loads ICU's collator (~10–20 ms on a pull's path)
  const sorted = Object.fromEntries(Object.entries(settings).filter(([, v]) => v !== undefined).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0))
  return `${cid} ${tocDigest} ${JSON.stringify(sorted)}`
}

/** Releases an opened layer nobody mounted (its prefetcher never started; the source is ours). */
async function release (opened: Promise<Opened>): Promise<void> {
  const o = await opened.catch(() => undefined)
  if (o == null) return
  await o.fs.stop().catch(() => {})
  await o.source.close?.().catch(() => {})
}

/**
 * Layers opened ahead of their mounts. A pull knows every layer before containerd's sequential
 * Prepare calls arrive; opening all of them at once (the footer and TOC are the only reads a
 * mount needs from the network) lets each Prepare find its TOC ready instead of fetching it in
 * turn. Bounded in number and time: what no mount takes is released.
 */
export class WarmCache {
  private readonly entries = new Map<string, Entry>()
  private readonly counters = { hits: 0, misses: 0, expired: 0 }

  constructor (private readonly components: { logger: Logger }, private readonly options: WarmCacheOptions) {}

  /**
   * The layer under `key`, opening it with `open` unless it is already open or being opened.
   * A failed open is forgotten (a mount then opens the layer itself).
   */
  warm (key: string, open: () => Promise<Opened>): { opened: Promise<Opened>, started: boolean } {
    this.sweep()
    const known = this.entries.get(key)
    if (known != null) return { opened: known.opened, started: false }
    while (this.entries.size >= this.options.maxLayers) {
      const [oldest, entry] = this.entries.entries().next().value as [string, Entry]
      this.drop(oldest, entry)
    }
    const opened = open()
    const entry: Entry = { opened, expires: Date.now() + this.options.ttlMs }
    this.entries.set(key, entry)
    opened.catch(() => { if (this.entries.get(key) === entry) this.entries.delete(key) })
    return { opened, started: true }
  }

  /** A layer of this CID opened (or being opened) ahead, under any TOC digest and settings. */
  find (cid: string): Promise<Opened> | undefined {
    for (const [key, entry] of this.entries) if (key.startsWith(`${cid} `)) return entry.opened
    return undefined
  }

  /** Hands the layer under `key` to a mount (which owns it from now on), or counts a miss. */
  take (key: string): Promise<Opened> | undefined {
    this.sweep()
    const entry = this.entries.get(key)
    if (entry == null) {
      this.counters.misses++
      return undefined
    }
    this.entries.delete(key)
    this.counters.hits++
    return entry.opened
  }

  /** Releases the layers whose time is up. */
  sweep (): void {
    const now = Date.now()
    for (const [key, entry] of this.entries) if (entry.expires <= now) this.drop(key, entry)
  }

  /** Releases everything (the manager stops). */
  async clear (): Promise<void> {
    const all = [...this.entries.values()]
    this.entries.clear()
    await Promise.all(all.map(async e => { await release(e.opened) }))
  }

  stats (): WarmStats {
    return { ready: this.entries.size, ...this.counters }
  }

  private drop (key: string, entry: Entry): void {
    this.entries.delete(key)
    this.counters.expired++
    this.components.logger.debug({ layer: key.split(' ')[0] }, 'dropping a layer opened ahead that no mount took')
    void release(entry.opened)
  }
}
