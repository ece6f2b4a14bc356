import { setMaxListeners } from 'node:events'
import { CID } from 'multiformats/cid'
import { AbortError, ReadTimeoutError, collectBlock, UnixfsFileReader, type BlockFetchPath, type BlockPriority, type FetchOptions } from '../ipfs/index.js'
import type { RangeSource, ReadHint } from './types.js'
import { deadline } from '../signals.js'

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
  /** Fetched for a background read rather than an on-demand one. */
  background: boolean
  /** Fetched for a prefetch read (right behind on-demand ones, and not a container's own read). */
  prefetch: boolean
}

export interface IpfsSourceOptions {
  /** Per-read timeout in ms; a read that takes longer fails with ReadTimeoutError. */
  readTimeout?: number
  /** Never ask the network (neither peers nor gateways): a missing block fails the read. */
  offline?: boolean
  /** Fetch the DAG's interior nodes under the root at open, in the background (default true). */
  prefetchInterior?: boolean
  /** Called for every block a read uses (network or local), e.g. for metrics. */
  onBlock?: (fetch: BlockFetch) => void
  signal?: AbortSignal
}

/**
 * A UnixFS file in IPFS as a {@link RangeSource}. `size()` comes from the root node; each
 * `read` fetches exactly the blocks the range covers through `helia.blockstore`, which is the
 * node's one fetch path: the local blockstore, then our peers over the block exchange, bitswap,
 * the gateways (src/ipfs/fetcher.ts); every network block is checked against its CID before it
 * is stored or used. A prefetch read (`hint.prefetch`) goes behind on-demand ones, a background
 * read (`hint.background`) waits for an idle link (the block exchange's priorities).
 */
export class IpfsSource implements RangeSource {
  private closed = false

  private constructor (
    readonly cid: CID,
    private readonly reader: UnixfsFileReader,
    private readonly counts: FetchStats,
    private readonly options: IpfsSourceOptions,
    private readonly getBlock: (c: CID, signal: AbortSignal | undefined, kind: BlockKind) => Promise<Uint8Array>
  ) {}

  static async open (blocks: BlockFetchPath, cid: CID | string, options: IpfsSourceOptions = {}): Promise<IpfsSource> {
    const root = typeof cid === 'string' ? CID.parse(cid) : cid
    const counts: FetchStats = { networkBlocks: 0, networkBytes: 0, localBlocks: 0, localBytes: 0 }
    const getBlock = async (c: CID, signal: AbortSignal | undefined, kind: BlockKind): Promise<Uint8Array> => {
      let network = false
      const background = kind === 'background'
      const fetchOptions: FetchOptions & { offline?: boolean } = {
        signal,
        offline: options.offline,
        // the exchange's queue: a prefetch goes behind on-demand wants, a background one waits for an idle link
        fetchPriority: kind,
        // Helia emits this once a broker delivered the block (not for local hits).
        onProgress: (e) => { if (e.type === 'blocks:get:blockstore:put') network = true }
      }
      const bytes = await collectBlock(blocks.get(c, fetchOptions))
      if (network) { counts.networkBlocks++; counts.networkBytes += bytes.length } else { counts.localBlocks++; counts.localBytes += bytes.length }
      options.onBlock?.({ cid: c, bytes: bytes.length, network, background, prefetch: kind === 'prefetch' })
      return bytes
    }
    // the node may fetch the blocks of a layer it has open for a peer that asks (cooperative fetch)
    const links = blocks.links?.open()
    let reader: UnixfsFileReader
    try {
      reader = await withTimeout(options.readTimeout ?? DEFAULTS.readTimeout, options.signal, async (signal) => await UnixfsFileReader.open(root, async (c, s) => await getBlock(c, s, 'demand'), { signal, links }), `opening ${root.toString()}`)
    } catch (err) {
      links?.close()
      throw err
    }
    // The interior nodes of a layer's DAG come at once, behind the first reads (background
    // priority: the footer and TOC a mount is waiting for go first), not awaited.
    if (options.prefetchInterior !== false && options.offline !== true) void reader.prefetchInterior(options.signal, async (c, s) => await getBlock(c, s, 'background'), RANK.background)
    return new IpfsSource(root, reader, counts, options, getBlock)
  }

  /** Blocks and bytes used so far (the root fetched at open included), by origin. */
  stats (): FetchStats {
    return { ...this.counts }
  }

  async size (): Promise<number> {
    return this.reader.size
  }

  async read (offset: number, length: number, signal?: AbortSignal, hint?: ReadHint): Promise<Uint8Array> {
    if (this.closed) throw new Error('IpfsSource is closed')
    const kind: BlockKind = hint?.background === true ? 'background' : hint?.prefetch === true ? 'prefetch' : 'demand'
    // the reader's node cache lets a read join a node's fetch only at its own priority or above
    const read = async (s?: AbortSignal): Promise<Uint8Array> => await this.reader.read(offset, length, s, kind !== 'demand' ? async (c, bs) => await this.getBlock(c, bs, kind) : undefined, RANK[kind])
    return await withTimeout(this.options.readTimeout ?? DEFAULTS.readTimeout, signal, read, `reading ${this.cid.toString()} at ${offset}+${length}`)
  }

  async close (): Promise<void> {
    this.closed = true
    this.reader.close()
  }
}

/** Why a block is fetched: an on-demand read, a prefetch (behind on-demand reads), a background read (on an idle link). */
type BlockKind = BlockPriority
/** The reader's node-cache rank of each kind (0: its own getter, on demand). */
const RANK: Record<BlockKind, number> = { demand: 0, prefetch: 1, background: 2 }

function aborted (signal?: AbortSignal): boolean {
  return signal?.aborted === true
}

/**
 * Runs `fn` with a signal that fires on the caller's abort or after `timeout` ms, and turns the
 * outcome into our typed errors: AbortError (caller) or ReadTimeoutError (timeout).
 */
async function withTimeout<T> (timeout: number, signal: AbortSignal | undefined, fn: (signal?: AbortSignal) => Promise<T>, what: string): Promise<T> {
  if (signal?.aborted === true) throw new AbortError(`${what}: aborted`)
  const timer = timeout > 0 ? deadline(timeout, signal) : undefined
  const combined = timer?.signal ?? signal
  // One signal goes to every block of a read: without this Node warns of a listener leak past 10.
  if (combined != null) setMaxListeners(Infinity, combined)
  try {
    return await fn(combined)
  } catch (err) {
    if (aborted(signal)) throw new AbortError(`${what}: aborted`)
    if (timer?.expired === true) throw new ReadTimeoutError(`${what}: no answer within ${timeout} ms`)
    throw err
  } finally {
    timer?.clear()
  }
}
