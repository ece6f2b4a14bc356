import type { BlockBroker, BlockRetrievalOptions } from '@helia/interface'
import type { CID } from 'multiformats/cid'
import type { Logger } from '../logging.js'
import type { BlockExchange, BlockPriority } from './block-exchange.js'
import { collectBlock, verifyBlock } from './dag-reader.js'
import { AbortError, BlockNotFoundError, InvalidOptionError } from './errors.js'
import type { GatewayClient } from './gateway.js'

/** Why a fetch's own signal fires once the fetch has settled: made once, seen only by stages still running. */
const FETCH_OVER = new AbortError('the block fetch is over')

/** Fetch-path defaults, in one place. */
export const DEFAULTS = {
  /**
   * ms the block exchange has to itself before bitswap is asked too. Bitswap starts at once
   * when every exchange peer has answered don't-have or failed (or none speaks the exchange);
   * this bounds how long a slow one delays it. Long enough for a 1 MiB leaf on a slow link.
   */
  exchangeBudget: 2_000,
  /**
   * ms bitswap has to itself before the gateways are asked too (at once when no peer is
   * connected: bitswap has nobody to ask). Bitswap never answers "not found": it waits for a
   * peer that has the block until the read's own deadline.
   */
  bitswapBudget: 2_000
} as const

export type FetcherOptions = { -readonly [K in keyof typeof DEFAULTS]?: number }

/** Blocks (and bytes) read through the node's blockstore, by where they came from. */
export interface StageStats {
  /** Reads answered by the local blockstore (or by a block fetched a moment ago, still being written). */
  localBlocks: number
  localBytes: number
  /** Blocks each stage delivered, and their bytes (a block fetched by two reads at once counts once). */
  exchangeBlocks: number
  exchangeBytes: number
  bitswapBlocks: number
  bitswapBytes: number
  gatewayBlocks: number
  gatewayBytes: number
  /** Of the exchange's blocks, those fetched on a peer's behalf (cooperative fetches, `fetchFor`). */
  onBehalfBlocks: number
  onBehalfBytes: number
  /** Fetches that ended without a block (aborted, timed out, nobody had it). */
  failures: number
}

/** Options Helia passes through `helia.blockstore.get(cid, options)` to the broker, plus ours. */
export interface FetchOptions extends BlockRetrievalOptions {
  /**
   * How urgent the block is in the exchange (default `demand`; `BlockPriority`). Not named
   * `priority`: these options go on to bitswap, which reads `priority` as its wantlist's number.
   */
  fetchPriority?: BlockPriority
}

export interface BlockFetcherComponents {
  /** Our block exchange; asked first. Not started: skipped. */
  exchange?: Pick<BlockExchange, 'get' | 'isStarted' | 'peers' | 'stop'>
  /** The blocks this node would fetch for itself (src/ipfs/open-links.ts): `fetchFor` fetches no other. */
  wanted?: (cid: CID) => boolean
  /** @helia/bitswap's broker: the protocol every other IPFS node speaks. */
  bitswap?: BlockBroker & { start?: () => Promise<void> | void, stop?: () => Promise<void> | void }
  /** Trustless gateways and mirrors; asked last. */
  gateways?: Pick<GatewayClient, 'get' | 'size'>
  /** Where a fetched, verified block goes (without waiting for the disk); false if it was there. */
  store: { putFetched: (cid: CID, bytes: Uint8Array) => boolean }
  /** Connected peers: none means bitswap cannot help, so the gateways go at once. */
  connections: () => number
  /**
   * Connected peers the exchange does not ask (they do not speak it, or lied, or keep timing
   * out). None: bitswap could only ask the exchange's own peers again, so it waits for the
   * exchange to end instead of joining after `exchangeBudget` (in a cluster of our nodes under
   * load that only sent each block again, by bitswap, from every peer that had it).
   */
  bitswapOnlyPeers?: () => number
  logger: Logger
}

type Stage = 'exchange' | 'bitswap' | 'gateway'

/**
 * The one fetch path of the node, as Helia's only block broker: `helia.blockstore.get` looks in
 * the local blockstore (Helia does that before any broker), then `retrieve` here asks, in order,
 *
 *   1. our block exchange, peers hedged (src/ipfs/block-exchange.ts),
 *   2. bitswap, once every exchange peer said don't-have/failed or after `exchangeBudget`
 *      (that only when some connected peer is one the exchange does not ask),
 *   3. the configured gateways, after `bitswapBudget` of bitswap (at once with no peers),
 *
 * and takes the first block that verifies against its CID; the later stages are not started
 * once it is there, the running ones are aborted. The block goes to the local blockstore
 * through `putFetched` (written behind the read) before Helia sees it. Helia races all its
 * brokers at once; one composite broker is how the order is kept.
 */
export class BlockFetcher implements BlockBroker {
  readonly name = 'ipfs-estargz'
  private readonly counts: StageStats = { localBlocks: 0, localBytes: 0, exchangeBlocks: 0, exchangeBytes: 0, bitswapBlocks: 0, bitswapBytes: 0, gatewayBlocks: 0, gatewayBytes: 0, onBehalfBlocks: 0, onBehalfBytes: 0, failures: 0 }
  private readonly opts: Required<FetcherOptions>
  private readonly log: Logger
  /** Fetches running now, by CID: what a peer asking us for one of these blocks waits for. */
  private readonly running = new Map<string, { promise: Promise<Uint8Array | undefined>, resolve: (b: Uint8Array | undefined) => void, readers: number }>()

  constructor (private readonly components: BlockFetcherComponents, options: FetcherOptions = {}) {
    this.opts = { ...DEFAULTS, ...options }
    for (const [k, v] of Object.entries(this.opts)) {
      if (!Number.isInteger(v) || v < 0) throw new InvalidOptionError(`fetcher: ${k} must be a non-negative integer, got ${String(v)}`)
    }
    this.log = components.logger.child({ component: 'fetcher' })
  }

  stats (): StageStats {
    return { ...this.counts }
  }

  /** Counts a block read from the local blockstore (see `CountingBlockstore`). */
  countLocal (bytes: number): void {
    this.counts.localBlocks++
    this.counts.localBytes += bytes
  }

  async start (): Promise<void> {
    // bitswap is started by the mixin that created it (src/ipfs/node.ts)
  }

  /** Helia stops its brokers after libp2p: stop ours (exchange, then bitswap) with it. */
  async stop (): Promise<void> {
    await this.components.exchange?.stop().catch(() => {})
    await this.components.bitswap?.stop?.()
  }

  async announce (cid: CID, options?: Parameters<NonNullable<BlockBroker['announce']>>[1]): Promise<void> {
    await this.components.bitswap?.announce?.(cid, options)
  }

  /**
   * The fetch of `cid` running now (ours or a cooperative one), if any: resolves to its verified
   * bytes, or undefined if it ends without them. Starts nothing (the block exchange's server
   * waits on it).
   */
  pending (cid: CID): Promise<Uint8Array | undefined> | undefined {
    return this.running.get(keyOf(cid))?.promise
  }

  async retrieve (cid: CID, options: FetchOptions = {}): Promise<Uint8Array> {
    return await this.tracked(cid, async () => await this.fetchOnce(cid, options))
  }

  /**
   * A cooperative fetch (src/ipfs/block-exchange.ts): a block a peer asked us for, that we would
   * fetch for ourselves (`wanted`), fetched now through the exchange only (never bitswap or a
   * gateway: the asker has those too; the peers waiting on us are not asked), and stored like
   * any fetched block. Registered as running, so the next askers, and our own reads, wait on it.
   * Undefined when the block is not one we want, or no peer had it.
   */
  async fetchFor (cid: CID, options: { background: boolean }): Promise<Uint8Array | undefined> {
    const exchange = this.components.exchange
    if (this.components.wanted?.(cid) !== true || exchange?.isStarted() !== true) return undefined
    try {
      return await this.tracked(cid, async () => {
        // at the asker's priority as its request says it (the wire knows background or not)
        const bytes = await exchange.get(cid, { priority: options.background ? 'background' : 'demand', onBehalf: true, validate: (b) => { verifyBlock(cid, b) } })
        if (bytes == null) throw new BlockNotFoundError(cid.toString(), 'any peer asked for a cooperative fetch')
        if (this.components.store.putFetched(cid, bytes)) {
          this.counts.exchangeBlocks++
          this.counts.exchangeBytes += bytes.length
          this.counts.onBehalfBlocks++
          this.counts.onBehalfBytes += bytes.length
        }
        return bytes
      })
    } catch (err) {
      this.log.debug({ cid: cid.toString(), err: (err as Error).message }, 'cooperative fetch ended without the block')
      return undefined
    }
  }

  /** Runs a fetch of `cid` registered in `running` (see `pending`); fetches of one CID at once share the entry. */
  private async tracked (cid: CID, fetch: () => Promise<Uint8Array>): Promise<Uint8Array> {
    const key = keyOf(cid)
    let entry = this.running.get(key)
    if (entry == null) {
      let resolve: (b: Uint8Array | undefined) => void = () => {}
      const promise = new Promise<Uint8Array | undefined>(r => { resolve = r })
      entry = { promise, resolve, readers: 0 }
      this.running.set(key, entry)
    }
    const e = entry
    e.readers++
    try {
      const bytes = await fetch()
      e.resolve(bytes)
      return bytes
    } finally {
      if (--e.readers === 0) {
        e.resolve(undefined) // no-op once resolved with the bytes
        if (this.running.get(key) === e) this.running.delete(key)
      }
    }
  }

  private async fetchOnce (cid: CID, options: FetchOptions): Promise<Uint8Array> {
    const outer = options.signal
    if (isAborted(outer)) throw new AbortError(`block ${cid.toString()}: aborted`)
    // Helia's check (its hashers), or ours; Helia does not hash again once it was called.
    const validate = async (bytes: Uint8Array): Promise<void> => {
      if (options.validateFn != null) await options.validateFn(bytes)
      else verifyBlock(cid, bytes)
    }
    // One controller per fetch stops the stages still running once it is over, and follows the
    // caller's signal by hand: AbortSignal.any and an abort without a reason (a DOMException and
    // its stack each) were a measurable share of a fetched block's CPU.
    const done = new AbortController()
    const signal = done.signal
    const follow = (): void => { done.abort(outer?.reason) }
    outer?.addEventListener('abort', follow, { once: true })
    try {
      const { bytes, stage } = await this.race(cid, { ...options, signal }, validate)
      // Two reads of one block at once both get here (Helia does not merge them; the exchange and
      // bitswap do, so the bytes crossed the network once): count the block once.
      if (this.components.store.putFetched(cid, bytes)) {
        this.counts[`${stage}Blocks`]++
        this.counts[`${stage}Bytes`] += bytes.length
      }
      return bytes
    } catch (err) {
      this.counts.failures++
      throw isAborted(outer) ? new AbortError(`block ${cid.toString()}: aborted`) : err
    } finally {
      outer?.removeEventListener('abort', follow)
      done.abort(FETCH_OVER) // stops the stages still running
    }
  }

  private async race (cid: CID, options: FetchOptions & { signal: AbortSignal }, validate: (b: Uint8Array) => Promise<void>): Promise<{ bytes: Uint8Array, stage: Stage }> {
    const { exchange, bitswap, gateways } = this.components
    const { signal } = options
    return await new Promise((resolve, reject) => {
      let running = 0
      let settled = false
      const timers: NodeJS.Timeout[] = []
      const started = new Set<Stage>()
      const finish = (result: { bytes: Uint8Array, stage: Stage } | Error): void => {
        if (settled) return
        settled = true
        for (const t of timers) clearTimeout(t)
        signal.removeEventListener('abort', onAbort)
        if (result instanceof Error) reject(result)
        else resolve(result)
      }
      const onAbort = (): void => { finish(new AbortError(`block ${cid.toString()}: aborted`)) }
      signal.addEventListener('abort', onAbort, { once: true })
      const after = (ms: number, fn: () => void): void => { timers.push(setTimeout(fn, ms)) }

      /** A stage ended without a block: start what comes next, or give up if nothing can. */
      const ended = (stage: Stage, err?: Error): void => {
        running--
        if (err != null && !signal.aborted) this.log.debug({ cid: cid.toString(), stage, err: err.message }, 'fetch stage failed')
        if (stage === 'exchange') startBitswap()
        else if (stage === 'bitswap') startGateways()
        if (running === 0 && !settled) finish(new BlockNotFoundError(cid.toString(), 'the local blockstore, nor from any peer or gateway'))
      }
      const run = (stage: Stage, fetch: () => Promise<Uint8Array | undefined>): void => {
        if (settled || started.has(stage)) return
        started.add(stage)
        running++
        fetch().then(
          (bytes) => { if (bytes != null) { running--; finish({ bytes, stage }) } else ended(stage) },
          (err: Error) => { ended(stage, err) }
        )
      }

      const startGateways = (): void => {
        if (settled || gateways == null || gateways.size === 0) return
        run('gateway', async () => await gateways.get(cid, { signal, validate }))
      }
      const startBitswap = (): void => {
        if (settled || started.has('bitswap')) return
        if (bitswap?.retrieve == null) { startGateways(); return }
        const retrieve = bitswap.retrieve.bind(bitswap)
        run('bitswap', async () => {
          let checked = false
          const bytes = await retrieve(cid, { ...options, signal, validateFn: async (b: Uint8Array) => { await validate(b); checked = true } })
          if (!checked) await validate(bytes)
          return bytes
        })
        if (this.components.connections() === 0) startGateways()
        else after(this.opts.bitswapBudget, startGateways)
      }

      if (exchange?.isStarted() === true && exchange.peers().length > 0) {
        run('exchange', async () => await exchange.get(cid, { signal, priority: options.fetchPriority, validate }))
        if (this.components.bitswapOnlyPeers == null || this.components.bitswapOnlyPeers() > 0) after(this.opts.exchangeBudget, startBitswap)
      } else {
        startBitswap()
      }
      if (running === 0) finish(new BlockNotFoundError(cid.toString(), 'the local blockstore, and no peer or gateway is configured'))
    })
  }
}

const isAborted = (signal?: AbortSignal): boolean => signal?.aborted === true

/** A map key for a CID (its bytes; see block-exchange.ts for why not its text). */
const keyOf = (cid: CID): string => Buffer.from(cid.bytes.buffer, cid.bytes.byteOffset, cid.bytes.byteLength).toString('base64')

/**
 * The local blockstore as Helia sees it: every `get` Helia makes of it is a local hit (Helia asks
 * the brokers, not the store, for a block it does not have), so it is counted here. Everything
 * else passes through.
 */
export function countingBlockstore<S extends { get: (cid: CID, options?: any) => AsyncIterable<Uint8Array> | Iterable<Uint8Array> }> (store: S, fetcher: () => BlockFetcher | undefined): S {
  return new Proxy(store, {
    get (target, prop, receiver) {
      if (prop === 'get') {
        return async function * (cid: CID, options?: unknown): AsyncGenerator<Uint8Array> {
          const bytes = await collectBlock(target.get(cid, options))
          fetcher()?.countLocal(bytes.length)
          yield bytes
        }
      }
      const v = Reflect.get(target, prop, receiver)
      return typeof v === 'function' ? v.bind(target) : v
    }
  })
}
