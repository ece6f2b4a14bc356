import { setMaxListeners } from 'node:events'
import type { PeerId } from '@libp2p/interface'
import { CID } from 'multiformats/cid'
import { isAbortError } from '../errors.js'
import { collectBlock, type BlockFetchPath } from '../ipfs/index.js'
import type { Logger } from '../logging.js'
import { IpfsSource, type BlockFetch, type RangeSource, type ReadHint } from '../source/index.js'
import { AbortError, InvalidOptionError, InvalidPrefetchRecordError } from './errors.js'
import { KnownRecords } from './known.js'
import { prefetchInOrder, type PrefetchOptions } from './prefetch.js'
import { RecordProtocol, type RecordProtocolComponents, type RecordProtocolOptions, type RecordProtocolStats } from './protocol.js'
import { decodeRecord, encodeRecord, type RecordLimits } from './record.js'
import { Recorder, type RecorderOptions, type Recording } from './recorder.js'
import { deadline } from '../signals.js'

/** Learned-prefetch defaults, in one place (the parts' own tables hold theirs). */
export const DEFAULTS = {
  /** A record's block must arrive within this long (it is small; its peer just said it has it). */
  recordFetchTimeoutMs: 5_000,
  /** Each prefetch read gives up after this long (then the prefetch of that layer stops). */
  readTimeoutMs: 30_000,
  /** Records tried per layer, newest first, until one checks out. */
  maxCandidates: 3,
  /** Layers learned (asked, fetched, prefetched) once per daemon run; remembered at most. */
  maxLearnedLayers: 4096
} as const

export interface LearnedPrefetchComponents {
  logger: Logger
  /** The node's one fetch path: every block verified against its CID, stored locally. */
  blocks: BlockFetchPath
  /** The local blockstore: own records go here, and we answer only for records held here. */
  localBlockstore: { put: (cid: CID, bytes: Uint8Array) => Promise<CID>, has: (cid: CID) => Promise<boolean> }
  libp2p: RecordProtocolComponents['libp2p']
  /**
   * Takes a layer's ranges to cache where its mounts read first (the FUSE manager's chunk cache);
   * false (or absent): the ranges are read here, into the local blockstore.
   */
  handOff?: (layer: string, ranges: Array<[number, number]>, signal: AbortSignal) => Promise<boolean>
}

export interface LearnedPrefetchOptions {
  /** JSON file of the newest record known per layer (none: kept in memory only). */
  file?: string
  recorder?: RecorderOptions
  protocol?: RecordProtocolOptions
  record?: RecordLimits
  prefetch?: Omit<PrefetchOptions, 'signal'>
  recordFetchTimeoutMs?: number
  readTimeoutMs?: number
  maxCandidates?: number
  maxLearnedLayers?: number
}

export interface LearnedPrefetchStats {
  /** Own records stored and offered to peers. */
  recordsPublished: number
  /** Records fetched from peers that checked out. */
  recordsFetched: number
  /** Layers prefetched in a record's order (a peer's or our own). */
  recordsUsed: number
  /** Records refused: not fetched in time, malformed, for another layer, out of range, lying about their time. */
  recordsRejected: number
  /** Layers for which no peer (nor this node) had a record. */
  layersWithoutRecord: number
  /** Pieces prefetched, bytes they cover, and of those the bytes that came over the network. */
  prefetchedPieces: number
  prefetchedBytes: number
  prefetchedNetworkBytes: number
  /** Prefetches that stopped early on a failed read. */
  prefetchFailures: number
  /** Layers whose ranges the mounts' own cache took (`handOff`) instead of the blockstore. */
  handedOff: number
  /** Layers whose hand-off was refused (the FUSE manager did not take it): prefetched into the blockstore instead. */
  handOffFallbacks: number
  /** Blocks the on-demand reads (a container's) used: found in the local blockstore, or fetched. */
  onDemandLocalBlocks: number
  onDemandNetworkBlocks: number
  protocol: RecordProtocolStats
}

interface Candidate {
  record: CID
  created: number
  /** undefined: our own known record. */
  peer?: PeerId
}

/**
 * Learned prefetch: nodes that ran an image tell the next ones in which order its layers were
 * first read, so those fetch in that order ahead of the container, even for an image never
 * optimized at conversion.
 *
 * - Recording: `onRead` sees every on-demand read of a layer blob (the blob API's hook); a
 *   Recorder keeps the first-read order as ranges, capped in count, bytes and time.
 * - Publishing: a closed recording becomes a small JSON block in the local blockstore; this node
 *   then answers for it on `/ipfs-estargz/prefetch-record/1.0.0` (keyed by layer CID, the newest
 *   known record per layer, our own or one we received, so records spread).
 * - Using: `learn(layer)` (at mount and at a pull's warm) asks the connected peers at once within
 *   a short deadline, fetches the newest record through the fetch path (verified by its CID),
 *   checks it against the layer, and reads its ranges in order through the fetch path, bounded
 *   and behind on-demand reads, so the container's reads find the blocks local.
 *
 * A record only ever changes the order in which blocks are fetched, never what is read: every
 * block is still checked against its CID, and every chunk against the TOC.
 */
export class LearnedPrefetch {
  private readonly log: Logger
  private readonly recorder: Recorder
  private readonly protocol: RecordProtocol
  private readonly known: KnownRecords
  private readonly learned = new Map<string, Promise<void>>()
  private readonly publishing = new Set<Promise<void>>()
  private readonly stopper = new AbortController()
  private readonly opts: Required<Pick<LearnedPrefetchOptions, 'recordFetchTimeoutMs' | 'readTimeoutMs' | 'maxCandidates' | 'maxLearnedLayers'>>
  private readonly counts: Omit<LearnedPrefetchStats, 'protocol'> = {
    recordsPublished: 0, recordsFetched: 0, recordsUsed: 0, recordsRejected: 0, layersWithoutRecord: 0,
    prefetchedPieces: 0, prefetchedBytes: 0, prefetchedNetworkBytes: 0, prefetchFailures: 0, handedOff: 0, handOffFallbacks: 0, onDemandLocalBlocks: 0, onDemandNetworkBlocks: 0
  }

  /** On-demand reads in flight, and prefetch workers waiting for there to be none. */
  private inflight = 0
  private readonly idleWaiters = new Set<() => void>()
  private started = false

  constructor (private readonly components: LearnedPrefetchComponents, private readonly options: LearnedPrefetchOptions = {}) {
    this.log = components.logger.child({ component: 'learned-prefetch' })
    this.opts = {
      recordFetchTimeoutMs: options.recordFetchTimeoutMs ?? DEFAULTS.recordFetchTimeoutMs,
      readTimeoutMs: options.readTimeoutMs ?? DEFAULTS.readTimeoutMs,
      maxCandidates: options.maxCandidates ?? DEFAULTS.maxCandidates,
      maxLearnedLayers: options.maxLearnedLayers ?? DEFAULTS.maxLearnedLayers
    }
    for (const [k, v] of Object.entries(this.opts)) {
      if (!Number.isSafeInteger(v) || v < 1) throw new InvalidOptionError(`learned prefetch: ${k} must be a positive integer, got ${String(v)}`)
    }
    // the recorder's byte cap and the record reader's must agree, or our own records would be refused
    const recorder = { maxBytes: options.record?.maxPrefetchBytes, maxRanges: options.record?.maxRanges, ...options.recorder }
    this.recorder = new Recorder({ logger: components.logger, onClose: (r) => { this.publish(r) } }, Object.fromEntries(Object.entries(recorder).filter(([, v]) => v != null)))
    this.known = new KnownRecords({ logger: this.log }, { file: options.file })
    this.protocol = new RecordProtocol({ libp2p: components.libp2p, logger: components.logger, lookup: async (layer) => await this.lookup(layer) }, options.protocol)
    setMaxListeners(Infinity, this.stopper.signal)
  }

  async start (): Promise<void> {
    await this.known.load()
    await this.protocol.start()
    this.started = true
  }

  /**
   * Closes the open recordings (publishing those with enough ranges), stops the prefetches and
   * the protocol, and writes the known records.
   */
  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    this.recorder.closeAll()
    this.stopper.abort(new AbortError('learned prefetch stopped'))
    for (const wake of this.idleWaiters) wake()
    await Promise.allSettled([...this.publishing, ...this.learned.values()])
    await this.protocol.stop()
    await this.known.flush()
    this.log.info(this.stats(), 'learned prefetch: counters at stop')
  }

  stats (): LearnedPrefetchStats {
    return { ...this.counts, protocol: this.protocol.stats() }
  }

  /**
   * The blob API's hook: an on-demand read of `length` bytes at `offset` of the layer blob `cid`
   * starts. Returns the function to call when it ends (prefetch reads wait while any is in flight).
   */
  readonly onRead = (cid: string, offset: number, length: number): () => void => {
    if (this.started) this.recorder.read(cid, offset, length)
    this.inflight++
    let ended = false
    return () => {
      if (ended) return
      ended = true
      if (--this.inflight === 0) for (const wake of [...this.idleWaiters]) wake()
    }
  }

  /** For the layer sources of on-demand reads (`IpfsSource`'s `onBlock`): counts where their blocks came from. */
  readonly countBlock = (fetch: BlockFetch): void => {
    if (fetch.background || fetch.prefetch) return
    if (fetch.network) this.counts.onDemandNetworkBlocks++
    else this.counts.onDemandLocalBlocks++
  }

  /** A layer source whose on-demand reads (not background or prefetch ones) are recorded (for mounts that read in this process). */
  recordReads (cid: string, source: RangeSource): RangeSource {
    return {
      size: async () => await source.size(),
      read: async (offset: number, length: number, signal?: AbortSignal, hint?: ReadHint) => {
        if (hint?.background === true || hint?.prefetch === true) return await source.read(offset, length, signal, hint)
        const done = this.onRead(cid, offset, length)
        try {
          return await source.read(offset, length, signal, hint)
        } finally {
          done()
        }
      },
      ...(source.close != null ? { close: async () => { await source.close?.() } } : {})
    }
  }

  /** The last mount of `layer` is gone: its recording closes now. */
  layerUnmounted (layer: string): void {
    this.recorder.close(layer)
  }

  /**
   * Starts learning `layer` (once per daemon run): asks the peers for its record and prefetches
   * in its order. Not awaited by mounts; the promise is for tests and resolves when it is done.
   */
  learn (layer: string): Promise<void> {
    const known = this.learned.get(layer)
    if (known != null) return known
    if (!this.started) return Promise.resolve()
    const run = this.learnLayer(layer, this.stopper.signal).catch((err: Error) => {
      if (this.stopper.signal.aborted && isAbortError(err)) return
      this.log.warn({ layer, err: err.message }, 'learned prefetch of a layer failed')
    })
    this.learned.set(layer, run)
    while (this.learned.size > this.opts.maxLearnedLayers) this.learned.delete(this.learned.keys().next().value as string)
    return run
  }

  private async learnLayer (layer: string, signal: AbortSignal): Promise<void> {
    const cid = CID.parse(layer)
    const started = performance.now()
    const source = await IpfsSource.open(this.components.blocks, cid, { signal, readTimeout: this.opts.readTimeoutMs, prefetchInterior: false })
    try {
      const size = await source.size()
      const candidates = await this.candidates(cid, signal)
      const askedMs = Math.round(performance.now() - started)
      if (candidates.length === 0) {
        this.counts.layersWithoutRecord++
        this.log.debug({ layer, ms: askedMs }, 'no prefetch record for this layer')
        return
      }
      let chosen: { candidate: Candidate, ranges: Array<[number, number]> } | undefined
      for (const c of candidates.slice(0, this.opts.maxCandidates)) {
        try {
          const record = decodeRecord(await this.fetchRecord(c.record, signal), { layer, size, now: Date.now() }, this.options.record)
          if (record.created !== c.created) throw new InvalidPrefetchRecordError(`prefetch record ${c.record.toString()} was announced as made at ${c.created}, it says ${record.created}`)
          chosen = { candidate: c, ranges: record.ranges }
          break
        } catch (err) {
          if (signal.aborted) throw err
          this.counts.recordsRejected++
          // the record's bytes matched its CID (the fetch path checked them): its peer named a bad one
          if (c.peer != null && err instanceof InvalidPrefetchRecordError) this.protocol.markBad(c.peer)
          this.log.warn({ layer, record: c.record.toString(), peer: c.peer?.toString(), err: (err as Error).message }, 'ignoring a prefetch record')
        }
      }
      if (chosen == null) return
      const { candidate, ranges } = chosen
      if (candidate.peer != null) {
        this.counts.recordsFetched++
        this.known.offer(layer, { record: candidate.record, created: candidate.created, own: false })
      }
      this.counts.recordsUsed++
      const handOff = this.components.handOff
      if (handOff != null) {
        if (await handOff(layer, ranges, signal)) {
          this.counts.handedOff++
          this.log.info({ layer, record: candidate.record.toString(), from: candidate.peer?.toString() ?? 'self', ranges: ranges.length, askMs: askedMs }, 'learned order handed to the mounts\' cache')
          return
        }
        // the mounts read through the blockstore too, so this still helps, one hop further away
        this.counts.handOffFallbacks++
        this.log.warn({ layer, record: candidate.record.toString() }, 'learned order not taken by the mounts\' cache: prefetching it into the blockstore instead')
      }
      const before = source.stats().networkBytes
      const result = await prefetchInOrder({ source, idle: async (s) => { await this.idle(s) } }, ranges, { ...this.options.prefetch, signal })
      const networkBytes = source.stats().networkBytes - before
      this.counts.prefetchedPieces += result.pieces
      this.counts.prefetchedBytes += result.bytes
      this.counts.prefetchedNetworkBytes += networkBytes
      if (result.error != null && !signal.aborted) this.counts.prefetchFailures++
      // stopped early: the layer's reads fall back to fetching on demand
      this.log[result.error == null ? 'info' : 'warn']({
        layer,
        record: candidate.record.toString(),
        from: candidate.peer?.toString() ?? 'self',
        ranges: ranges.length,
        pieces: `${result.pieces}/${result.planned}`,
        bytes: result.bytes,
        networkBytes,
        askMs: askedMs,
        ms: Math.round(performance.now() - started),
        ...(result.error != null ? { err: result.error.message } : {})
      }, result.error == null ? 'prefetched a layer in a learned order' : 'learned prefetch of a layer stopped early')
    } finally {
      await source.close()
    }
  }

  /** Our own known record and the peers' answers, one per record CID, newest first. */
  private async candidates (layer: CID, signal: AbortSignal): Promise<Candidate[]> {
    const answers = await this.protocol.ask(layer, signal)
    const all: Candidate[] = [...answers]
    const own = this.known.get(layer.toString())
    if (own != null) all.push({ record: own.record, created: own.created })
    const seen = new Set<string>()
    return all.sort((a, b) => b.created - a.created).filter((c) => {
      const k = c.record.toString()
      if (seen.has(k)) return false
      seen.add(k)
      return true
    })
  }

  private async fetchRecord (record: CID, signal: AbortSignal): Promise<Uint8Array> {
    const d = deadline(this.opts.recordFetchTimeoutMs, signal)
    try {
      return await collectBlock(this.components.blocks.get(record, { signal: d.signal }))
    } catch (err) {
      if (d.expired) throw new InvalidPrefetchRecordError(`prefetch record ${record.toString()} not fetched within ${this.opts.recordFetchTimeoutMs} ms`)
      throw err
    } finally {
      d.clear()
    }
  }

  /** Resolves when no on-demand read is in flight (or at once when stopping). */
  private async idle (signal?: AbortSignal): Promise<void> {
    if (this.inflight === 0 || signal?.aborted === true) return
    await new Promise<void>((resolve) => {
      const wake = (): void => {
        this.idleWaiters.delete(wake)
        signal?.removeEventListener('abort', wake)
        resolve()
      }
      this.idleWaiters.add(wake)
      signal?.addEventListener('abort', wake, { once: true })
    })
  }

  private async lookup (layer: CID): Promise<{ record: CID, created: number } | undefined> {
    const known = this.known.get(layer.toString())
    if (known == null || !await this.components.localBlockstore.has(known.record)) return undefined
    return { record: known.record, created: known.created }
  }

  /** A closed recording becomes our record for its layer, unless it is older than one we know. */
  private publish (rec: Recording): void {
    const job = (async () => {
      const source = await IpfsSource.open(this.components.blocks, rec.layer, { offline: true, prefetchInterior: false })
      const size = await source.size()
      await source.close()
      // reads past the end are answered short: keep what exists
      const ranges = rec.ranges.filter(([o]) => o < size).map(([o, l]): [number, number] => [o, Math.min(l, size - o)])
      const created = Date.now()
      const { cid, bytes } = encodeRecord({ layer: rec.layer, size, created, ranges }, this.options.record)
      await this.components.localBlockstore.put(cid, bytes)
      if (!this.known.offer(rec.layer, { record: cid, created, own: true })) return
      this.counts.recordsPublished++
      this.log.info({ layer: rec.layer, record: cid.toString(), ranges: ranges.length, bytes: ranges.reduce((n, [, l]) => n + l, 0), windowMs: created - rec.firstReadAt }, 'prefetch record published')
    })().catch((err: Error) => {
      this.log.warn({ layer: rec.layer, err: err.message }, 'publishing a prefetch record failed')
    })
    this.publishing.add(job)
    void job.finally(() => this.publishing.delete(job))
  }
}
