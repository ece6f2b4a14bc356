import { Registry, collectDefaultMetrics, type Metric } from 'prom-client'
import type { ChunkCacheStats, LatencyCounts } from '../fs/index.js'
import type { BlockExchange, BlockExchangeStats, StageStats } from '../ipfs/index.js'
import type { MirrorStats } from '../mirror/index.js'
import type { LearnedPrefetchStats } from '../prefetch-record/index.js'
import type { RemoteMetrics } from '../snapshotter/index.js'
import type { LayerStats } from './layer-stats.js'

/**
 * Everything /metrics shows, read from the components' own counters at scrape time (the node's
 * fetch path and block exchange, the snapshotter's remote path, the chunk cache and the mounted
 * layers, in the FUSE manager when it holds them): nothing is counted twice.
 */
export interface DaemonSnapshot {
  fetch: StageStats
  exchange: BlockExchangeStats
  peers: ReturnType<BlockExchange['peerStats']>
  connectedPeers: number
  remote: RemoteMetrics
  /** Lazy layer mounts: each with its counters when they could be read. */
  mounts: number
  layers: LayerStats[]
  cache?: ChunkCacheStats
  /** undefined: the mounts live in the daemon; false: the FUSE manager did not answer in time. */
  fuseManagerUp?: boolean
  /** undefined: learned prefetch is off (`[prefetch] enable = false`). */
  learned?: LearnedPrefetchStats
  /** undefined: the daemon serves no mirror (`[mirror] enable = false`). */
  mirror?: MirrorStats
}

type Labels = Record<string, string | number>

/** What prom-client's registry reads of a metric: its values, each with its own name. */
interface Collected {
  name: string
  help: string
  type: string
  aggregator: string
  values: Array<{ metricName?: string, labels: Labels, value: number }>
}

/**
 * A counter or gauge whose values are read from a component at each scrape. prom-client's own
 * keep values between scrapes, and write 0 for a metric without labels that has none: a
 * metric the snapshot lacks (no FUSE manager) must be absent instead.
 */
class CollectedMetric {
  readonly aggregator = 'sum'

  constructor (readonly name: string, readonly help: string, readonly type: 'counter' | 'gauge', private readonly read: () => Array<[Labels, number]>) {}

  get (): Collected {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.read().map(([labels, value]) => ({ labels, value })) }
  }
}

/**
 * A histogram whose bucket counts come from a component's {@link LatencyCounts}: prom-client's
 * own Histogram only counts what it observes itself.
 */
class CollectedHistogram {
  readonly type = 'histogram'
  readonly aggregator = 'sum'

  constructor (readonly name: string, readonly help: string, private readonly read: () => Array<{ labels: Labels, counts: LatencyCounts }>) {}

  get (): Collected {
    const values: Collected['values'] = []
    for (const { labels, counts } of this.read()) {
      let cumulative = 0
      counts.boundsMs.forEach((le, i) => {
        cumulative += counts.counts[i]
        values.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le }, value: cumulative })
      })
      values.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le: '+Inf' }, value: counts.count })
      values.push({ metricName: `${this.name}_sum`, labels, value: counts.sumMs })
      values.push({ metricName: `${this.name}_count`, labels, value: counts.count })
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator }
  }
}

/**
 * The Prometheus registry of the daemon. Names follow the reference snapshotter's (`stargz_fs_*`)
 * where a metric means the same thing, ours (`ipfs_estargz_*`) otherwise; docs/operations.md
 * lists them. `render(snapshot)` fills every metric from one snapshot and returns the text.
 */
export class DaemonMetrics {
  readonly registry = new Registry()
  private snapshot?: DaemonSnapshot
  /** Renders one at a time: each fills the metrics from its own snapshot. */
  private rendering: Promise<unknown> = Promise.resolve()

  constructor () {
    collectDefaultMetrics({ register: this.registry })
    const s = (): DaemonSnapshot => {
      if (this.snapshot == null) throw new Error('metrics rendered without a snapshot')
      return this.snapshot
    }
    const register = (m: CollectedMetric | CollectedHistogram): void => { this.registry.registerMetric(m as unknown as Metric) }
    const counter = (name: string, help: string, _labelNames: string[], values: () => Array<[Labels, number]>): void => { register(new CollectedMetric(name, help, 'counter', values)) }
    const gauge = (name: string, help: string, _labelNames: string[], values: () => Array<[Labels, number]>): void => { register(new CollectedMetric(name, help, 'gauge', values)) }
    const perLayer = (f: (l: LayerStats) => number): Array<[Labels, number]> => s().layers.map(l => [{ layer: l.cid, mountpoint: l.mountpoint }, f(l)])
    const layerLabels = ['layer', 'mountpoint']

    // ---- as the reference names them ----
    register(new CollectedHistogram('stargz_fs_operation_duration_milliseconds',
      'Latency in milliseconds of a layer\'s reads from the node (operation_type remote_registry_get: each coalesced chunk fetch, whoever wanted it), per mounted layer (its CID).',
      () => s().layers.map(l => ({ labels: { operation_type: 'remote_registry_get', layer: l.cid }, counts: l.fetchMs }))))
    gauge('stargz_fs_layer_fetched_size_bytes', 'Compressed bytes of the mounted layer fetched so far.', layerLabels, () => perLayer(l => l.fetched.total))
    gauge('stargz_fs_layer_prefetch_size_bytes', 'Compressed bytes of the mounted layer\'s prioritized region (before .prefetch.landmark).', layerLabels, () => perLayer(l => l.prefetchSizeBytes))
    gauge('stargz_fs_layer_size_bytes', 'Compressed bytes of the mounted layer\'s file data.', layerLabels, () => perLayer(l => l.sizeBytes))
    counter('stargz_fs_bytes_served', 'File bytes the mounted layer returned to readers.', layerLabels, () => perLayer(l => l.bytesServed))

    // ---- ours ----
    gauge('ipfs_estargz_layer_fetched_bytes', 'Compressed bytes read for a mounted layer, by who wanted them: on_demand (a reader), prefetch, background.', [...layerLabels, 'priority'], () => s().layers.flatMap(l => [
      [{ layer: l.cid, mountpoint: l.mountpoint, priority: 'on_demand' }, l.fetched.onDemand],
      [{ layer: l.cid, mountpoint: l.mountpoint, priority: 'prefetch' }, l.fetched.prefetch],
      [{ layer: l.cid, mountpoint: l.mountpoint, priority: 'background' }, l.fetched.background]
    ] as Array<[Labels, number]>))
    counter('ipfs_estargz_fetched_bytes_total', 'Bytes read, by where they came from: chunk_cache (decompressed file bytes of the lazy mounts\' chunk cache); local_blockstore, exchange (our block exchange with peers), bitswap, gateway (IPFS block bytes through the node\'s fetch path).', ['source'], () => {
      const { fetch: f, cache } = s()
      return [
        ...(cache != null ? [[{ source: 'chunk_cache' }, cache.hitBytes] as [Labels, number]] : []),
        [{ source: 'local_blockstore' }, f.localBytes],
        [{ source: 'exchange' }, f.exchangeBytes],
        [{ source: 'bitswap' }, f.bitswapBytes],
        [{ source: 'gateway' }, f.gatewayBytes]
      ]
    })
    counter('ipfs_estargz_fetched_blocks_total', 'IPFS blocks read through the node\'s fetch path, by where they came from.', ['source'], () => {
      const f = s().fetch
      return [[{ source: 'local_blockstore' }, f.localBlocks], [{ source: 'exchange' }, f.exchangeBlocks], [{ source: 'bitswap' }, f.bitswapBlocks], [{ source: 'gateway' }, f.gatewayBlocks]]
    })
    counter('ipfs_estargz_block_fetch_failures_total', 'Block fetches that ended without a block (aborted, timed out, nobody had it).', [], () => [[{}, s().fetch.failures]])
    counter('ipfs_estargz_peer_received_bytes_total', 'Verified block bytes received from each peer through our block exchange.', ['peer'], () => Object.entries(s().peers).map(([peer, p]) => [{ peer }, p.bytesReceived]))
    counter('ipfs_estargz_peer_served_bytes_total', 'Block bytes served to each peer through our block exchange.', ['peer'], () => Object.entries(s().peers).map(([peer, p]) => [{ peer }, p.bytesServed]))
    counter('ipfs_estargz_verification_failures_total', 'Data refused because it did not match its digest: chunk (a layer chunk against the TOC\'s chunkDigest, of the layers mounted now), block (a block from a peer against its CID).', ['kind'], () => [
      [{ kind: 'chunk' }, s().layers.reduce((n, l) => n + l.verificationFailures, 0)],
      [{ kind: 'block' }, s().exchange.badBlocks]
    ])
    counter('ipfs_estargz_exchange_requests_total', 'Block-exchange requests sent to peers, by the priority of their blocks: on_demand (a reader waits), prefetch (behind on-demand ones, never in the requests kept for them), background (only on an idle link).', ['priority'], () => {
      const e = s().exchange
      const prefetch = e.prefetchRequests ?? 0
      const background = e.backgroundRequests ?? 0
      return [[{ priority: 'on_demand' }, (e.requests ?? 0) - prefetch - background], [{ priority: 'prefetch' }, prefetch], [{ priority: 'background' }, background]]
    })
    counter('ipfs_estargz_exchange_events_total', 'Block-exchange events: hedge (a second peer asked because the first was slow), hedge_skipped (none: the hedge budget was spent), pending_answer (a peer said it was fetching the block we asked for), served_after_wait (a block served once our own fetch of it arrived), wait_in_vain (such a wait that ended in don\'t-have), cooperative_fetch (a block fetched for a peer that asked for it), cooperative_busy (none: the limit was reached), ranked_dont_have (answered at once: the asker ranks above us for the block), stream_opened (a stream dialed for a request: the others went on pooled streams), idle_stream_closed (a pooled stream unused too long, or an inbound one with no next request).', ['event'], () => {
      const e = s().exchange
      return [
        [{ event: 'hedge' }, e.hedges ?? 0], [{ event: 'hedge_skipped' }, e.hedgesSkipped ?? 0], [{ event: 'pending_answer' }, e.pendingAnswers ?? 0],
        [{ event: 'served_after_wait' }, e.servedAfterWait ?? 0], [{ event: 'wait_in_vain' }, e.waitsInVain ?? 0],
        [{ event: 'cooperative_fetch' }, e.cooperativeFetches ?? 0], [{ event: 'cooperative_busy' }, e.cooperativeBusy ?? 0], [{ event: 'ranked_dont_have' }, e.rankedDontHaves ?? 0],
        [{ event: 'stream_opened' }, e.streamsOpened ?? 0], [{ event: 'idle_stream_closed' }, e.idleStreamsClosed ?? 0]
      ]
    })
    gauge('ipfs_estargz_chunk_cache_size_bytes', 'Bytes held by the chunk cache of the lazy mounts, by tier.', ['tier'], () => {
      const c = s().cache
      return c == null ? [] : [[{ tier: 'disk' }, c.diskBytes], [{ tier: 'memory' }, c.memoryBytes]]
    })
    gauge('ipfs_estargz_chunk_cache_entries', 'Chunks on disk in the chunk cache.', [], () => { const c = s().cache; return c == null ? [] : [[{}, c.diskEntries]] })
    counter('ipfs_estargz_chunk_cache_requests_total', 'Chunk reads of the lazy mounts, by result: hit (answered by the cache) or miss (fetched).', ['result'], () => {
      const c = s().cache
      return c == null ? [] : [[{ result: 'hit' }, c.hits], [{ result: 'miss' }, c.misses]]
    })
    gauge('ipfs_estargz_chunk_cache_hit_ratio', 'Hits over all chunk reads of the lazy mounts since the cache started (0 before any read).', [], () => {
      const c = s().cache
      return c == null ? [] : [[{}, c.hits + c.misses > 0 ? c.hits / (c.hits + c.misses) : 0]]
    })
    counter('ipfs_estargz_chunk_cache_evictions_total', 'Chunks evicted from the disk cache to stay under its cap.', [], () => { const c = s().cache; return c == null ? [] : [[{}, c.evictions]] })
    counter('ipfs_estargz_chunk_cache_write_failures_total', 'Chunk writes to the disk cache that failed (a full disk, a removed directory); the chunks stayed in memory only.', [], () => { const c = s().cache; return c == null ? [] : [[{}, c.writeFailures]] })
    gauge('ipfs_estargz_mounts', 'Lazy layer mounts.', [], () => [[{}, s().mounts]])
    gauge('ipfs_estargz_peers', 'Peers connected.', [], () => [[{}, s().connectedPeers]])
    counter('ipfs_estargz_snapshot_fallbacks_total', 'Prepares of a lazy layer that fell back to a normal snapshot (the layer is downloaded whole), by reason.', ['reason'], () => Object.entries(s().remote.fallbacks).map(([reason, n]) => [{ reason }, n]))
    counter('ipfs_estargz_remote_snapshots_prepared_total', 'Prepares answered with a lazily mounted layer.', [], () => [[{}, s().remote.prepared]])
    counter('ipfs_estargz_learned_prefetch_layers_total', 'Layers a learned first-read order was used for, by how: handed_off (to the FUSE manager\'s chunk cache), hand_off_fallback (it did not take it: prefetched into the blockstore instead), or without_record (no peer had one).', ['outcome'], () => {
      const l = s().learned
      return l == null ? [] : [[{ outcome: 'handed_off' }, l.handedOff], [{ outcome: 'hand_off_fallback' }, l.handOffFallbacks], [{ outcome: 'without_record' }, l.layersWithoutRecord]]
    })
    counter('ipfs_estargz_learned_prefetch_records_total', 'Learned first-read records, by event: published (our own), fetched (from a peer, checked), rejected.', ['event'], () => {
      const l = s().learned
      return l == null ? [] : [[{ event: 'published' }, l.recordsPublished], [{ event: 'fetched' }, l.recordsFetched], [{ event: 'rejected' }, l.recordsRejected]]
    })
    counter('ipfs_estargz_mirror_requests_total', 'HTTP requests to the mirror (registry API and gateway), by outcome: served (answered, errors included) or refused (too many at once: 429).', ['outcome'], () => {
      const m = s().mirror
      return m == null ? [] : [[{ outcome: 'served' }, m.requests - m.refused], [{ outcome: 'refused' }, m.refused]]
    })
    counter('ipfs_estargz_mirror_blob_answers_total', 'Blobs the mirror\'s registry API answered, by kind: whole, or range (a Range request).', ['kind'], () => {
      const m = s().mirror
      return m == null ? [] : [[{ kind: 'whole' }, m.blobs - m.ranges], [{ kind: 'range' }, m.ranges]]
    })
    counter('ipfs_estargz_mirror_blob_bytes_total', 'Blob bytes the mirror\'s registry API sent.', [], () => { const m = s().mirror; return m == null ? [] : [[{}, m.blobBytes]] })
    counter('ipfs_estargz_mirror_extent_answers_total', 'Blob answers sent from the blob\'s runs in the pack files (learnt after a whole verified read), by outcome: sent, or missed (a run was gone: the rest went block by block).', ['outcome'], () => {
      const m = s().mirror
      return m == null ? [] : [[{ outcome: 'sent' }, m.extentAnswers], [{ outcome: 'missed' }, m.extentMisses]]
    })
    gauge('ipfs_estargz_fuse_manager_up', '1 when the FUSE manager holding the lazy mounts answered this scrape, 0 when it did not (its metrics are missing then).', [], () => {
      const up = s().fuseManagerUp
      return up == null ? [] : [[{}, up ? 1 : 0]]
    })
  }

  /** The exposition text of `snapshot`, and its content type. */
  async render (snapshot: DaemonSnapshot): Promise<{ text: string, contentType: string }> {
    const job = this.rendering.catch(() => {}).then(async () => {
      this.snapshot = snapshot
      try {
        return { text: await this.registry.metrics(), contentType: this.registry.contentType as string }
      } finally {
        this.snapshot = undefined
      }
    })
    this.rendering = job
    return await job
  }
}
