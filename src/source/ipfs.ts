import { setMaxListeners } from 'node:events'
import type { Helia } from 'helia'
import { CID } from 'multiformats/cid'
import { AbortError, ReadTimeoutError } from '../ipfs/errors.js'
import type { BlockExchange } from '../ipfs/block-exchange.js'
import { collectBlock, UnixfsFileReader } from '../ipfs/dag-reader.js'
import type { RangeSource } from './types.js'

/** IpfsSource defaults, in one place. */
export const DEFAULTS = {
  /** Per-read timeout in ms; 0 = none (the caller's signal decides). */
  readTimeout: 0
} as const

/** Where the blocks of a read came from. */
export interface FetchStats {
  /** Blocks (and their bytes) fetched from peers. */
  networkBlocks: number
  networkBytes: number
  /** Blocks already in the local blockstore. */
  localBlocks: number
  localBytes: number
}

/** One block delivered to a read: its CID, size and whether it came over the network. */
export interface BlockFetch {
  cid: CID
  bytes: number
  network: boolean
}

export interface IpfsSourceOptions {
  /** Per-read timeout in ms; a read that takes longer fails with ReadTimeoutError. */
  readTimeout?: number
  /** Never ask peers (neither the exchange nor bitswap): a missing block fails the read. */
  offline?: boolean
  /**
   * Our block exchange (`IpfsNode.exchange`): a block not stored locally is asked of our own
   * peers over it first, then over bitswap if none has it.
   */
  exchange?: Pick<BlockExchange, 'get' | 'peek'>
  /** Called for every block a read uses (network or local), e.g. for metrics. */
  onBlock?: (fetch: BlockFetch) => void
  signal?: AbortSignal
}

/**
 * A UnixFS file in IPFS as a {@link RangeSource}. `size()` comes from the root node; each
 * `read` fetches exactly the blocks the range covers: the local blockstore first, then our peers
 * over the block exchange (if given), then peers over bitswap (through `helia.blockstore`).
 * Network blocks are verified against their CID (by the exchange, or by Helia) before they are
 * stored.
 */
export class IpfsSource implements RangeSource {
  private closed = false

  private constructor (
    readonly cid: CID,
    private readonly reader: UnixfsFileReader,
    private readonly counts: FetchStats,
    private readonly options: IpfsSourceOptions
  ) {}

  static async open (helia: { blockstore: Pick<Helia['blockstore'], 'get'> }, cid: CID | string, options: IpfsSourceOptions = {}): Promise<IpfsSource> {
    const root = typeof cid === 'string' ? CID.parse(cid) : cid
    const counts: FetchStats = { networkBlocks: 0, networkBytes: 0, localBlocks: 0, localBytes: 0 }
    const count = (c: CID, bytes: Uint8Array, network: boolean): Uint8Array => {
      if (network) { counts.networkBlocks++; counts.networkBytes += bytes.length } else { counts.localBlocks++; counts.localBytes += bytes.length }
      options.onBlock?.({ cid: c, bytes: bytes.length, network })
      return bytes
    }
    const exchange = options.offline === true ? undefined : options.exchange
    const getBlock = async (c: CID, signal?: AbortSignal): Promise<Uint8Array> => {
      if (exchange != null) {
        // Received a moment ago, still being written: local. (Checked before the blockstore:
        // the write may complete meanwhile, and then the blockstore has it.)
        const held = exchange.peek(c)
        if (held != null) return count(c, held, false)
        // Local first, in the blockstore's own has + get (a separate `has` here would make it
        // three file operations per local block on the chunk-fetch path); a miss goes to our peers.
        try {
          return count(c, await collectBlock(helia.blockstore.get(c, { signal, offline: true })), false)
        } catch (err) {
          if ((err as Error).name !== 'BlockNotFoundWhileOfflineError') throw err
        }
        const fetched = await exchange.get(c, { signal })
        if (fetched != null) return count(c, fetched, true)
      }
      let network = false
      const bytes = await collectBlock(helia.blockstore.get(c, {
        signal,
        offline: options.offline,
        onProgress: (e) => { if (e.type === 'blocks:get:blockstore:put') network = true }
      }))
      return count(c, bytes, network)
    }
    const reader = await withTimeout(options.readTimeout ?? DEFAULTS.readTimeout, options.signal, async (signal) => await UnixfsFileReader.open(root, getBlock, { signal }), `opening ${root.toString()}`)
    return new IpfsSource(root, reader, counts, options)
  }

  /** Blocks and bytes used so far (the root fetched at open included), by origin. */
  stats (): FetchStats {
    return { ...this.counts }
  }

  async size (): Promise<number> {
    return this.reader.size
  }

  async read (offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    if (this.closed) throw new Error('IpfsSource is closed')
    return await withTimeout(this.options.readTimeout ?? DEFAULTS.readTimeout, signal, async (s) => await this.reader.read(offset, length, s), `reading ${this.cid.toString()} at ${offset}+${length}`)
  }

  async close (): Promise<void> {
    this.closed = true
  }
}

function aborted (signal?: AbortSignal): boolean {
  return signal?.aborted === true
}

/**
 * Runs `fn` with a signal that fires on the caller's abort or after `timeout` ms, and turns the
 * outcome into our typed errors: AbortError (caller) or ReadTimeoutError (timeout).
 */
async function withTimeout<T> (timeout: number, signal: AbortSignal | undefined, fn: (signal?: AbortSignal) => Promise<T>, what: string): Promise<T> {
  if (signal?.aborted === true) throw new AbortError(`${what}: aborted`)
  const timer = timeout > 0 ? AbortSignal.timeout(timeout) : undefined
  const signals = [signal, timer].filter((s): s is AbortSignal => s != null)
  const combined = signals.length > 1 ? AbortSignal.any(signals) : signals[0]
  // One signal goes to every block of a read (pitfall 10).
  if (combined != null) setMaxListeners(Infinity, combined)
  try {
    return await fn(combined)
  } catch (err) {
    if (aborted(signal)) throw new AbortError(`${what}: aborted`)
    if (timer?.aborted === true) throw new ReadTimeoutError(`${what}: no answer within ${timeout} ms`)
    throw err
  }
}
