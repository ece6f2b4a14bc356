import type { CID } from 'multiformats/cid'
import { InvalidOptionError } from './errors.js'

/** Open-links defaults, in one place. */
export const DEFAULTS = {
  /**
   * Links remembered at most, over every open reader (≈ 100 bytes of heap each: 256 Ki links
   * ≈ 25 MB). Past it, new links are not remembered: a peer asking for one hears don't-have, as
   * before cooperative fetches.
   */
  maxLinks: 1 << 18
} as const

export type OpenLinksOptions = { -readonly [K in keyof typeof DEFAULTS]?: number }

/** The links one reader registered, released together when it closes. */
export interface LinkScope {
  /** Remembers the links of a node this reader decoded (children of the DAG it reads). */
  add: (links: readonly CID[]) => void
  /** Forgets this reader's links. Idempotent. */
  close: () => void
}

/**
 * The blocks this node's open readers may fetch: the links of the DAG nodes they decoded (a
 * mounted layer's root and interior nodes). The block exchange fetches one of these on a peer's
 * behalf (src/ipfs/block-exchange.ts, "cooperative fetch"); a CID that is none of these is never
 * fetched for a peer, so a stranger cannot make us fetch what we would not fetch for ourselves.
 * Counted per reader: a link stays while any open reader registered it.
 */
export class OpenLinks {
  private readonly counts = new Map<string, number>()
  private readonly max: number
  /** Links not remembered because `maxLinks` was reached. */
  dropped = 0

  constructor (options: OpenLinksOptions = {}) {
    this.max = options.maxLinks ?? DEFAULTS.maxLinks
    if (!Number.isSafeInteger(this.max) || this.max < 0) throw new InvalidOptionError(`open links: maxLinks must be a non-negative integer, got ${String(this.max)}`)
  }

  get size (): number {
    return this.counts.size
  }

  has (cid: CID): boolean {
    return this.counts.has(linkKey(cid))
  }

  /** A scope for one reader: what it adds is forgotten when it closes. */
  open (): LinkScope {
    // the keys are the map's own strings: a reader's list costs a pointer per link
    let keys: string[] | undefined = []
    return {
      add: (links) => {
        if (keys == null) return
        for (const cid of links) {
          const key = linkKey(cid)
          const n = this.counts.get(key)
          if (n == null && this.counts.size >= this.max) { this.dropped++; continue }
          this.counts.set(key, (n ?? 0) + 1)
          keys.push(key)
        }
      },
      close: () => {
        if (keys == null) return
        for (const key of keys) {
          const n = this.counts.get(key) ?? 0
          if (n <= 1) this.counts.delete(key)
          else this.counts.set(key, n - 1)
        }
        keys = undefined
      }
    }
  }
}

/** A map key for a CID: its bytes (not `cid.toString()`, see block-exchange.ts). */
function linkKey (cid: CID): string {
  return Buffer.from(cid.bytes.buffer, cid.bytes.byteOffset, cid.bytes.byteLength).toString('base64')
}
