import { createHash } from 'node:crypto'
import { setMaxListeners } from 'node:events'
import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface'
import type { LengthPrefixedStream } from '@libp2p/utils'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import type { Logger } from '../logging.js'
import { collectBlock } from './dag-reader.js'
import { AbortError, BlockDigestMismatchError, BlockExchangeProtocolError, BlockExchangeTimeoutError, InvalidOptionError } from './errors.js'
import { lengthPrefixed } from './length-prefix.js'

/** The protocol id announced through identify. */
export const PROTOCOL = '/ipfs-estargz/blocks/1.0.0'
/**
 * The same protocol plus the pending frame: a server that is fetching a block itself says so
 * before it answers, so the asker waits for it instead of hedging to another peer. Both are
 * served; a client asks for 1.1.0 first.
 */
export const PROTOCOL_PENDING = '/ipfs-estargz/blocks/1.1.0'
/**
 * 1.1.0 plus request flags (a byte before the CIDs), for cooperative fetches: a server asked for
 * a block it would fetch anyway (a link of a DAG it has open), by a peer it ranks above for that
 * block, fetches it and answers pending, then the block (see `serve`). All three versions are
 * served; a client asks for the newest first.
 */
export const PROTOCOL_COOPERATIVE = '/ipfs-estargz/blocks/1.2.0'
const PROTOCOLS = [PROTOCOL_COOPERATIVE, PROTOCOL_PENDING, PROTOCOL]

/** 1.2.0 request flags (one byte before the CIDs; the same for every CID of the request). */
/** The asker follows the rank order: a server it does not rank below answers from its blockstore only. Always set by us (room for clients that do not). */
const FLAG_RANKED = 1
/** The asker's background fetch: a cooperative fetch for it waits behind the server's own reads. */
const FLAG_BACKGROUND = 2
/** A hedge: answer if held or being fetched, but start no fetch (another peer was asked to). */
const FLAG_NO_FETCH = 4
const KNOWN_FLAGS = FLAG_RANKED | FLAG_BACKGROUND | FLAG_NO_FETCH

/**
 * A map key for a CID. Not `cid.toString()`: that caches the base32 text on the CID object, built
 * one character at a time (a rope of ~50 V8 cons strings, ~1.5 KB), and the CIDs of the interior
 * nodes a reader keeps live as long as the layer is mounted: 20 MB of heap for one image.
 */
function keyOf (cid: CID): string {
  return Buffer.from(cid.bytes.buffer, cid.bytes.byteOffset, cid.bytes.byteLength).toString('base64')
}

/** Response status bytes (the first byte of every response frame). */
const DONT_HAVE = 0
const HAVE = 1
/** 1.1.0 only: "fetching it myself; the answer follows" (then a HAVE or DONT_HAVE frame for the same CID). */
const PENDING = 2
/** 1.2.0 only: have (the block follows), and the server is a seed: it holds blocks but reads none (no DAG open), e.g. the origin. */
const HAVE_SEED = 3

/** Block-exchange defaults, in one place. */
export const DEFAULTS = {
  /** Server: CIDs accepted in one request. */
  maxCidsPerRequest: 64,
  /**
   * Server: blocks of one request read from disk ahead of the one being sent (the answers stay
   * in request order). Reading them one after the other put a disk read's latency per block on
   * the round trip; the window bounds the memory one request holds.
   */
  serveReadAhead: 8,
  /**
   * Server: answers already read are sent together, up to this many bytes per write: one yamux
   * frame, one noise message per 64 KiB and one socket write for many small blocks instead of
   * one each (a layer of small files is mostly blocks of a few KiB).
   */
  serveBatchBytes: 256 * 1024,
  /**
   * Server: answers ready are held back while the server waits on a disk read of the same
   * request, up to this many bytes; beyond it they go out first. A write of its own cost the
   * asker about as much as the read it spares (a small file's read asks for two blocks, its data
   * and the next file's tar header: sent apart, the second came ~1.5 ms after the first on a
   * loaded 2-core machine). Answers never wait on a fetch of the server's own.
   */
  serveHoldBytes: 64 * 1024,
  /** Client: CIDs in one on-demand request (a bigger batch is split); ≤ maxCidsPerRequest. */
  requestCids: 16,
  /**
   * Client: on-demand and prefetch requests in flight to one peer (each on a stream of its
   * own; prefetch ones leave `demandReservedRequests` of them to on-demand ones). Past this,
   * wants wait in the queue, and the next requests carry more CIDs each (up to
   * maxCidsPerRequest), so a burst (a prefetch of a region of small files: hundreds of blocks
   * at once) goes out as a few big requests. Below the server's `maxInboundStreams`: without a
   * bound, such a burst opened more streams than the server takes, it reset the rest, and their
   * blocks fell back to bitswap.
   */
  maxRequestsPerPeer: 32,
  /**
   * Client: of `maxRequestsPerPeer`, the requests prefetch may not use (it gets at most the
   * other 24): a prefetch burst (a learned order, a landmark region: hundreds of blocks) would
   * otherwise fill every request to the peer, and a container's on-demand want would wait for
   * one of them to end (a whole request's time) before it went out. With the reserve it goes out
   * at once. 0: prefetch may use every request (it still goes after the on-demand wants queued).
   */
  demandReservedRequests: 8,
  /** Client: CIDs in one background request: small, so on-demand requests never queue long behind one. */
  backgroundRequestCids: 4,
  /**
   * Client: background requests in flight per peer. They are sent only while no on-demand or
   * prefetch request to that peer is in flight: background fetch uses the idle link, never the
   * busy one.
   */
  maxBackgroundRequests: 1,
  /** Largest block served or accepted: bitswap's limit (our leaves are ≤ 1 MiB). */
  maxBlockSize: 4 * 1024 * 1024,
  /** Largest CID in a request: a sha2-256 CIDv1 is 36 bytes; this leaves room for others. */
  maxCidBytes: 128,
  /**
   * A request (or a server waiting for the first request on a stream, or writing an answer)
   * fails after this many ms without progress. Bounds a silent peer, not a big answer.
   */
  requestTimeout: 5_000,
  /** Concurrent inbound / outbound streams per protocol version per connection (libp2p counts each version apart: two versions, twice this in all). */
  maxInboundStreams: 64,
  maxOutboundStreams: 64,
  /**
   * Peers asked at most for one block (hedged, see `hedgeDelay`) before `get` gives up (→ bitswap,
   * which asks every connected peer, the origin too). Enough for a cluster's nodes: a don't-have
   * costs one round trip, a bitswap fallback may cost the origin another copy.
   */
  peersPerBlock: 8,
  /**
   * Idle streams kept open per peer for the next requests: as many as may be in flight
   * (`maxRequestsPerPeer`), so the streams of one burst of requests carry the next burst. With 4,
   * every request past them opened a stream of its own (a negotiation round trip, and libp2p's
   * peer-store update on both sides): a fifth of a bulk fetch's CPU, measured.
   */
  maxIdleStreams: 32,
  /**
   * Client: a pooled stream unused this many ms is closed (libp2p would close it only after its
   * own stream inactivity timeout, 120 s). Below `serveIdleTimeout`, so the client closes an idle
   * stream before the server does and seldom sends on one the server is closing.
   */
  idleStreamTimeout: 30_000,
  /** Server: a stream whose next request has not come this many ms after the last answer is closed. */
  serveIdleTimeout: 60_000,
  /**
   * Hedging: a peer that has not answered after this many ms, the next peer is asked too (first
   * verified answer wins). Used until the peer has answered once; then its observed answer time
   * (smoothed) plus `max(hedgeMargin, 4 × its variation)` is used, at most `maxHedgeDelay`.
   * Background requests are not hedged (they move on only on don't-have, failure or timeout).
   */
  hedgeDelay: 50,
  hedgeMargin: 3,
  maxHedgeDelay: 500,
  /**
   * Hedges allowed per 100 gets, over time (a token bucket of `maxHedgeTokens`): when every peer
   * is slow because all are busy (a cluster pulling at once on small machines), hedging without
   * a limit sends each block several times and makes everyone slower still. A get whose hedge
   * finds no token waits for its peer's answer, don't-have or timeout.
   */
  hedgePercent: 10,
  maxHedgeTokens: 10,
  /**
   * Server: a block we do not hold but are fetching ourselves is answered once it arrives (so
   * nodes starting together need not all go to the origin), if it arrives within this many ms;
   * else don't-have. Below `requestTimeout`, so the asker never times out waiting for it, and
   * below the fetcher's `exchangeBudget`, so the asker hears don't-have (and asks another peer)
   * before it falls back to bitswap, which would ask every peer at once.
   */
  serveWaitMs: 1_500,
  /**
   * Server: cooperative fetches running at once, on peers' behalf (a block we neither hold nor
   * fetch, asked by a peer, that is a link of a DAG we have open: we fetch it and answer pending,
   * then the block, so a block goes from the origin to one node and the others wait on it).
   * Past this, such a block is answered don't-have. 0: none (answer don't-have, as 1.1.0 did).
   */
  maxCooperativeFetches: 16,
  /** Client: a peer whose requests time out this many times in a row is not asked for `suspendMs`. */
  maxTimeouts: 2,
  suspendMs: 30_000,
  /**
   * How much the choice of first peer per block is spread (see `ranked`), in percent: a peer's
   * expected cost is multiplied by a factor in [1, 1 + loadSpread/100) drawn per node, peer and
   * block. 0: peers of equal cost are asked in the order they connected.
   */
  loadSpread: 100,
  /** Answer times below this many ms count as equal when choosing a peer (LAN noise, a stream's first answer). */
  costFloorMs: 10,
  /** Peers whose byte counters (`peerStats`) are kept; the least recently seen go first. */
  maxPeerStats: 1024
} as const

export type BlockExchangeOptions = { -readonly [K in keyof typeof DEFAULTS]?: number }

/** What the server needs of a blockstore (FsBlockstore fits): the LOCAL one. */
export interface ExchangeBlockstore {
  /** Throws (or yields nothing) when the block is not there. */
  get: (cid: CID) => Iterable<Uint8Array> | AsyncIterable<Uint8Array>
}

export interface BlockExchangeComponents {
  libp2p: Pick<Libp2p, 'peerId' | 'handle' | 'unhandle' | 'register' | 'unregister' | 'dialProtocol' | 'getConnections' | 'peerStore'>
  /** The LOCAL blockstore: the server reads only this (it must never fetch from the network). */
  blockstore: ExchangeBlockstore
  /**
   * A fetch of this block this node is making right now (src/ipfs/fetcher.ts), resolving to its
   * verified bytes or undefined: the server answers with it once it arrives. Never starts a fetch.
   */
  inflight?: (cid: CID) => Promise<Uint8Array | undefined> | undefined
  /** Is this a block this node would fetch for itself (a link of a DAG it has open, src/ipfs/open-links.ts)? */
  wanted?: (cid: CID) => boolean
  /** This node reads nothing now (no DAG open): it only serves, like an origin (said in 1.2.0 answers). */
  seeding?: () => boolean
  /**
   * Fetches a block on a peer's behalf (a `wanted` one), as `inflight` will then report it,
   * through `get` (the fetcher's `fetchFor`); resolves to its verified bytes or undefined.
   */
  fetchFor?: (cid: CID, options: { background: boolean }) => Promise<Uint8Array | undefined>
  logger: Logger
}

/** Bytes exchanged with one peer through this protocol since start. */
export interface PeerExchangeStats {
  /** Verified blocks (and bytes) received from the peer. */
  blocksReceived: number
  bytesReceived: number
  /** Blocks (and bytes) served to the peer. */
  blocksServed: number
  bytesServed: number
  /** Blocks from the peer that did not match their CID (one is enough to stop asking it). */
  badBlocks: number
  /** Requests to the peer that failed or timed out. */
  failedRequests: number
}

/** Counters since start (client side, then server side). */
export interface BlockExchangeStats {
  /** Requests sent (≤ requestCids CIDs each), and how many were prefetch and background ones. */
  requests: number
  prefetchRequests: number
  backgroundRequests: number
  /** Requests that failed (stream error, timeout, protocol violation, peer gone). */
  failedRequests: number
  /** Streams opened to peers (the others' requests went on pooled streams). */
  streamsOpened: number
  /** Verified blocks received, and their bytes. */
  blocksReceived: number
  bytesReceived: number
  /** Don't-have answers received. */
  dontHaves: number
  /** Blocks whose bytes did not match their CID (rejected, never used; the peer is skipped). */
  badBlocks: number
  /** Gets that asked a second (or third) peer because the first was slow: hedges. */
  hedges: number
  /** Hedges not sent because the hedge budget (`hedgePercent`) was spent. */
  hedgesSkipped: number
  /** Requests answered, blocks (and bytes) served, don't-haves sent. */
  servedRequests: number
  servedBlocks: number
  servedBytes: number
  servedDontHaves: number
  /** Writes that carried answers (several answers share one while they fit `serveBatchBytes`). */
  servedWrites: number
  /** Inbound streams closed because the request was malformed, oversized or too slow. */
  rejectedRequests: number
  /** Blocks served once our own fetch of them arrived (asked while we were fetching them). */
  servedAfterWait: number
  /** Waits on our fetch that ended in a don't-have (the fetch failed, or took over `serveWaitMs`). */
  waitsInVain: number
  /** Idle streams closed: pooled ones unused for `idleStreamTimeout` (client), or with no next request within `serveIdleTimeout` (server). */
  idleStreamsClosed: number
  /** Peers set aside for `suspendMs` because their requests kept timing out. */
  suspensions: number
  /** Pending frames received: a peer said it was fetching a block we asked for (no hedge then). */
  pendingAnswers: number
  /** Cooperative fetches started for a peer that asked for a block we would fetch anyway. */
  cooperativeFetches: number
  /** Such blocks answered don't-have because `maxCooperativeFetches` were running. */
  cooperativeBusy: number
  /** Requests answered without waiting or fetching because the asker ranks above us for the block (1.2.0). */
  rankedDontHaves: number
}

/**
 * How urgent a get is, most urgent first. `demand`: a reader is waiting (a container's read).
 * `prefetch`: what a container is about to read (a landmark region, a learned order); as urgent
 * as on demand on the wire (hedged, not flagged background), but sent after the on-demand wants
 * and never in the last `demandReservedRequests` requests to a peer. `background`: the rest of a
 * layer; sent only on an idle link, a few CIDs at a time, not hedged.
 */
export type BlockPriority = 'demand' | 'prefetch' | 'background'
/** The priorities in the order the client's queues are served. */
const PRIORITIES: readonly BlockPriority[] = ['demand', 'prefetch', 'background']
const RANK: Record<BlockPriority, number> = { demand: 0, prefetch: 1, background: 2 }

export interface GetOptions {
  signal?: AbortSignal
  /** Default `demand`; see `BlockPriority`. */
  priority?: BlockPriority
  /**
   * Checks a block against its CID, throwing when it does not match (Helia passes its own as
   * `validateFn`). Without it, sha2-256 CIDs are checked here and others skip the exchange.
   */
  validate?: (bytes: Uint8Array) => Promise<void> | void
  /** A cooperative fetch, for peers waiting on us: it earns no hedge tokens. */
  onBehalf?: boolean
}

/** What one peer answered for one CID. */
type Answer = { have: Uint8Array, counted: boolean } | { dontHave: true } | { failed: Error } | { pending: true }

/** A CID asked of one peer, with everyone waiting for its answer. */
interface Want {
  cid: CID
  key: string
  /** The queue it waits in until sent (asked again more urgently, it moves up). */
  priority: BlockPriority
  /** FLAG_NO_FETCH or 0; a get joining a want not sent yet keeps only the flags both have. */
  flags: number
  waiters: Set<(a: Answer) => void>
}

/** A stream to a peer with its length-prefixed reader/writer (which may hold bytes already read). */
interface Conn {
  stream: Stream
  lp: LengthPrefixedStream<Stream>
  /** While pooled: closes it once idle for `idleStreamTimeout`. */
  idleTimer?: NodeJS.Timeout
}

/** Everything the client keeps per connected peer. */
interface PeerState {
  id: string
  peer: PeerId
  /** Smoothed answer time of block requests and its variation (ms), as TCP's RTO estimator. */
  srtt?: number
  rttvar: number
  /** Blocks this peer has delivered (peers that have delivered rank first). */
  delivered: number
  /** Requests that timed out in a row. */
  timeouts: number
  /** Wants not sent yet, one queue per priority. */
  queued: Record<BlockPriority, Map<string, Want>>
  /** Wants sent, waiting for their answer. */
  sent: Map<string, Want>
  /** Requests in flight, by priority. */
  inFlight: Record<BlockPriority, number>
  idle: Conn[]
  scheduled: boolean
  /** Its last block came with HAVE_SEED: it reads nothing (an origin), so it is asked after the peers that do. */
  seed: boolean
}

/**
 * `/ipfs-estargz/blocks/1.0.0`: fetch blocks from our own peers in one round trip.
 *
 * Bitswap opens a new stream for every message in each direction (want, then block), and every
 * stream opened costs a multistream-select round trip. Here the client writes the CIDs it wants
 * on a stream it keeps open (idle streams per peer are pooled), the server answers each
 * CID in order, and the stream waits for the next request. Frames are unsigned-varint
 * length-prefixed (`lpStream`):
 *
 *   request  = frame( CID-bytes… )           ≤ maxCidsPerRequest CIDs back to back (they delimit
 *                                             themselves); ≤ maxCidsPerRequest × maxCidBytes
 *   response = one frame per CID, in order:  frame( 0x01 block-bytes )   have
 *                                            frame( 0x00 )               don't have
 *
 * Either side ends the conversation by closing its end. The server reads only the local
 * blockstore. `get` asks the best peer first and, if it is slow, the next ones too (hedging);
 * a don't-have moves on at once; the first answer that verifies against the CID wins, so a lying
 * peer costs a wasted request, never a bad block. Gets for the same peer issued in the same tick
 * go out as one request (a chunk spanning several leaves costs one round trip). Prefetch gets
 * wait behind on-demand ones and leave them requests of their own; background gets wait for an
 * idle link (`BlockPriority`). Nothing is stored here: the caller (the node's block fetcher) does.
 */
export class BlockExchange {
  private readonly libp2p: BlockExchangeComponents['libp2p']
  private readonly blockstore: BlockExchangeComponents['blockstore']
  private readonly log: Logger
  private readonly opts: Required<BlockExchangeOptions>
  private readonly counts: BlockExchangeStats = emptyStats()
  /** Connected peers that announced the protocol, by id string. */
  private readonly peerStates = new Map<string, PeerState>()
  /** Peers that sent bytes that did not match the CID: never asked again. */
  private readonly bad = new Set<string>()
  /** Peers whose requests kept timing out, until when (ms since epoch). */
  private readonly suspended = new Map<string, number>()
  private readonly perPeer = new Map<string, PeerExchangeStats>()
  private readonly inflight: BlockExchangeComponents['inflight']
  private readonly wanted: BlockExchangeComponents['wanted']
  private readonly fetchFor: BlockExchangeComponents['fetchFor']
  private readonly seeding: BlockExchangeComponents['seeding']
  /** Cooperative fetches running. */
  private cooperating = 0
  /** Peers waiting on us for a block (by CID key): a get of it does not ask them (they do not hold it). */
  private readonly waiting = new Map<string, Set<string>>()
  private hedgeTokens: number
  private readonly streams = new Set<Stream>()
  private topologyId: string | undefined
  private running = false

  constructor (components: BlockExchangeComponents, options: BlockExchangeOptions = {}) {
    this.libp2p = components.libp2p
    this.blockstore = components.blockstore
    this.inflight = components.inflight
    this.wanted = components.wanted
    this.fetchFor = components.fetchFor
    this.seeding = components.seeding
    this.log = components.logger.child({ component: 'block-exchange' })
    this.opts = { ...DEFAULTS, ...options }
    this.hedgeTokens = this.opts.maxHedgeTokens
    for (const [k, v] of Object.entries(this.opts)) {
      const min = k === 'loadSpread' || k === 'maxCooperativeFetches' || k === 'demandReservedRequests' || k === 'serveHoldBytes' ? 0 : 1
      if (!Number.isInteger(v) || v < min) throw new InvalidOptionError(`block exchange: ${k} must be an integer ≥ ${min}, got ${String(v)}`)
    }
    if (this.opts.requestCids > this.opts.maxCidsPerRequest || this.opts.backgroundRequestCids > this.opts.maxCidsPerRequest) {
      throw new InvalidOptionError('block exchange: requestCids and backgroundRequestCids must not exceed maxCidsPerRequest')
    }
    if (this.opts.demandReservedRequests >= this.opts.maxRequestsPerPeer) {
      throw new InvalidOptionError('block exchange: demandReservedRequests must be below maxRequestsPerPeer (prefetch needs a request too)')
    }
  }

  isStarted (): boolean {
    return this.running
  }

  async start (): Promise<void> {
    if (this.running) return
    for (const protocol of PROTOCOLS) {
      await this.libp2p.handle(protocol, async (stream, connection) => { await this.serve(stream, connection, protocol) }, {
        maxInboundStreams: this.opts.maxInboundStreams,
        maxOutboundStreams: this.opts.maxOutboundStreams
      })
    }
    // every peer speaks 1.0.0 (1.1.0 came later): one topology
    this.topologyId = await this.libp2p.register(PROTOCOL, {
      onConnect: (peer) => { this.addPeer(peer) },
      onDisconnect: (peer) => { this.peerStates.delete(peer.toString()) }
    })
    this.running = true
    // Peers connected before start were identified already: no onConnect for them.
    await Promise.all(this.libp2p.getConnections().map(async (c) => {
      try {
        const p = await this.libp2p.peerStore.get(c.remotePeer)
        if (p.protocols.includes(PROTOCOL)) this.addPeer(c.remotePeer)
      } catch {}
    }))
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    if (this.topologyId != null) this.libp2p.unregister(this.topologyId)
    for (const protocol of PROTOCOLS) await this.libp2p.unhandle(protocol).catch(() => {})
    for (const s of [...this.streams]) s.abort(new AbortError('block exchange stopped'))
    this.streams.clear()
    const stopped: Answer = { failed: new AbortError('block exchange stopped') }
    for (const ps of this.peerStates.values()) {
      for (const w of [...PRIORITIES.flatMap(p => [...ps.queued[p].values()]), ...ps.sent.values()]) for (const waiter of [...w.waiters]) waiter(stopped)
    }
    this.peerStates.clear()
  }

  stats (): BlockExchangeStats {
    return { ...this.counts }
  }

  /** Bytes exchanged per peer (by peer id) since start. */
  peerStats (): Record<string, PeerExchangeStats> {
    return Object.fromEntries([...this.perPeer].map(([k, v]) => [k, { ...v }]))
  }

  private peerCounters (id: string): PeerExchangeStats {
    let c = this.perPeer.get(id)
    if (c != null) {
      this.perPeer.delete(id) // re-inserted last: the map's order is recency
    } else {
      c = { blocksReceived: 0, bytesReceived: 0, blocksServed: 0, bytesServed: 0, badBlocks: 0, failedRequests: 0 }
      if (this.perPeer.size >= this.opts.maxPeerStats) this.perPeer.delete(this.perPeer.keys().next().value as string)
    }
    this.perPeer.set(id, c)
    return c
  }

  /**
   * Connected peers that speak the protocol (minus the ones that lied), best first: peers that
   * have delivered blocks before the others, each group by observed answer time.
   */
  peers (): PeerId[] {
    return this.ranked().map(ps => ps.peer)
  }

  /**
   * The block from a connected peer, checked against its CID; undefined when no peer asked has
   * it (or all failed), or the CID cannot be checked — the caller then goes on to bitswap. Does
   * not look in the local blockstore (the caller does) and stores nothing.
   *
   * Asks the best peer; if it has not answered within its hedge delay, the next one too (at most
   * `peersPerBlock`); a don't-have or a failure asks the next at once. Rejects only with
   * AbortError, when `signal` fires.
   */
  async get (cid: CID, options: GetOptions = {}): Promise<Uint8Array | undefined> {
    const { signal } = options
    if (signal?.aborted === true) throw new AbortError(`block ${cid.toString()}: aborted`)
    const validate = options.validate ?? (cid.multihash.code === sha256.code ? (b: Uint8Array) => { verifySha256(cid, b) } : undefined)
    if (!this.running || validate == null) return undefined
    const peers = this.order(cid).slice(0, this.opts.peersPerBlock)
    if (peers.length === 0) return undefined
    const priority = options.priority ?? 'demand'
    const background = priority === 'background'
    const onBehalf = options.onBehalf === true
    const key = keyOf(cid)
    return await new Promise<Uint8Array | undefined>((resolve, reject) => {
      let next = 0
      let outstanding = 0
      let done = false
      let hedge: NodeJS.Timeout | undefined
      const cancels = new Set<() => void>()
      const finish = (result: Uint8Array | undefined | Error): void => {
        if (done) return
        done = true
        clearTimeout(hedge)
        signal?.removeEventListener('abort', onAbort)
        for (const c of cancels) c()
        if (result instanceof Error) reject(result)
        else resolve(result)
      }
      const onAbort = (): void => { finish(new AbortError(`block ${cid.toString()}: aborted`)) }
      const settled = (): void => {
        outstanding--
        if (!launch() && outstanding === 0) finish(undefined)
      }
      /** Seeds a hedge passed over, asked next by the first ask that is not a hedge. */
      const deferred: PeerState[] = []
      /** Asks the next peer; false when there is none left. */
      const launch = (hedged = false): boolean => {
        if (done || !this.running) return false
        // a peer waiting on us for this block does not hold it (and would wait on us in turn)
        const askable = (p: PeerState): boolean => !this.bad.has(p.id) && this.peerStates.get(p.id) === p && this.waiting.get(key)?.has(p.id) !== true
        let ps: PeerState | undefined
        while (!hedged && deferred.length > 0 && ps == null) {
          const p = deferred.shift() as PeerState
          if (askable(p)) ps = p
        }
        while (next < peers.length && ps == null) {
          const p = peers[next++]
          // a hedge never goes to a seed: each block a seed sends is one more copy from the
          // origin; the get waits for its peer instead (its don't-have or failure moves on to the seed)
          if (hedged && p.seed) deferred.push(p)
          else if (askable(p)) ps = p
        }
        if (ps == null) return false
        // a hedge may not start a fetch for us: the peer asked first may be fetching it already
        const flags = hedged ? FLAG_NO_FETCH : 0
        const peer = ps
        outstanding++
        let cancel: (() => void) | undefined
        const onAnswer = (a: Answer): void => {
          if ('pending' in a) {
            // the peer is fetching it and will answer within its serve wait: no hedge before that
            if (done || background) return
            clearTimeout(hedge)
            hedge = setTimeout(onHedge, this.opts.serveWaitMs + this.hedgeDelay(peer))
            return
          }
          if (cancel != null) cancels.delete(cancel)
          if (done) return
          if (!('have' in a)) { settled(); return }
          // caught lying meanwhile (an earlier answer of the same request, another get): the rest
          // of what it sent is neither checked nor counted, as from a peer that answered nothing
          if (this.bad.has(peer.id)) { settled(); return }
          void (async () => {
            try {
              await validate(a.have)
            } catch (err) {
              if (signal?.aborted === true) { onAbort(); return }
              this.lied(peer, cid, err as Error)
              settled()
              return
            }
            if (done) return
            if (!a.counted) {
              a.counted = true
              this.counts.blocksReceived++
              this.counts.bytesReceived += a.have.length
              peer.delivered++
              const pc = this.peerCounters(peer.id)
              pc.blocksReceived++
              pc.bytesReceived += a.have.length
            }
            finish(a.have)
          })()
        }
        cancel = this.ask(peer, cid, priority, flags, onAnswer)
        cancels.add(cancel)
        if (!background) {
          clearTimeout(hedge)
          hedge = setTimeout(onHedge, this.hedgeDelay(peer))
        }
        return true
      }
      const onHedge = (): void => {
        if (done || !peers.slice(next).some(p => !p.seed)) return
        if (this.hedgeTokens < 1) { this.counts.hedgesSkipped++; return }
        this.hedgeTokens--
        this.counts.hedges++
        launch(true)
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      if (!background && !onBehalf) this.hedgeTokens = Math.min(this.opts.maxHedgeTokens, this.hedgeTokens + this.opts.hedgePercent / 100)
      launch()
    })
  }

  private addPeer (peer: PeerId): void {
    const id = peer.toString()
    if (this.peerStates.has(id)) return
    this.peerStates.set(id, {
      id,
      peer,
      rttvar: 0,
      delivered: 0,
      timeouts: 0,
      queued: { demand: new Map(), prefetch: new Map(), background: new Map() },
      sent: new Map(),
      inFlight: { demand: 0, prefetch: 0, background: 0 },
      idle: [],
      scheduled: false,
      seed: false
    })
  }

  /**
   * The peers to ask, best first. Without a CID (`peers()`): peers that have delivered first, each
   * group by answer time. For a block, by an expected cost that spreads load instead of sending
   * every node to the fastest peer (the origin, at first): the answer time (the fastest known
   * until measured; at least `costFloorMs`), times one plus the requests we have in flight to
   * that peer, times a factor in [1, 2) (`loadSpread`) drawn from a hash of the peer and the block.
   * That hash is the same on every node (rendezvous hashing): nodes that start together mostly
   * agree on which peer to ask first for each block, so that peer fetches it once (from the
   * origin, after the others answered it don't-have) while the others wait on it, and different
   * blocks go to different peers. A loaded origin, whose answers slow down, stops being anyone's
   * first choice once others hold blocks. Lying and suspended peers are left out.
   */
  private ranked (cid?: CID): PeerState[] {
    const now = Date.now()
    const list = [...this.peerStates.values()].filter(ps => {
      if (this.bad.has(ps.id)) return false
      const until = this.suspended.get(ps.id)
      if (until == null) return true
      if (until > now) return false
      this.suspended.delete(ps.id)
      return true
    })
    if (cid == null) return list.sort((a, b) => Number(b.delivered > 0) - Number(a.delivered > 0) || (a.srtt ?? Infinity) - (b.srtt ?? Infinity))
    const key = cid.multihash.digest
    // a peer not timed yet is assumed as fast as the fastest known; times below the floor are noise
    const known = list.filter(ps => ps.srtt != null).map(ps => ps.srtt as number)
    const guess = known.length > 0 ? Math.min(...known) : this.opts.hedgeDelay
    const cost = (ps: PeerState): number => {
      const time = Math.max(this.opts.costFloorMs, ps.srtt ?? guess)
      return time * (1 + ps.inFlight.demand + ps.inFlight.prefetch) * (1 + spread(ps.id, key) * this.opts.loadSpread / 100)
    }
    const costs = new Map(list.map(ps => [ps, cost(ps)]))
    return list.sort((a, b) => (costs.get(a) as number) - (costs.get(b) as number))
  }

  /**
   * Whom a get asks, in order: the peers that rank above us for this block (see `ranksAbove`:
   * one fetches it or waits on one above it, so everyone ends up waiting on one copy), then the
   * seeds (they hold it, but every block a seed sends is one more copy from the origin), then the
   * peers we rank above (they answer from their blockstore only: useful once they hold the
   * block, e.g. when the origin is gone); within each group by expected cost (`ranked`).
   */
  private order (cid: CID): PeerState[] {
    const all = this.ranked(cid)
    const group = (ps: PeerState): number => ps.seed ? 1 : this.ranksAbove(cid, ps.id) ? 2 : 0
    return [0, 1, 2].flatMap(g => all.filter(ps => group(ps) === g))
  }

  private hedgeDelay (ps: PeerState): number {
    if (ps.srtt == null) return this.opts.hedgeDelay
    return Math.min(this.opts.maxHedgeDelay, Math.ceil(ps.srtt + Math.max(this.opts.hedgeMargin, 4 * ps.rttvar)))
  }

  /** One answer time of a block request (ms), folded in as TCP does its round-trip time. */
  private sample (ps: PeerState, ms: number): void {
    if (ps.srtt == null) {
      ps.srtt = ms
      ps.rttvar = ms / 2
    } else {
      ps.rttvar = 0.75 * ps.rttvar + 0.25 * Math.abs(ps.srtt - ms)
      ps.srtt = 0.875 * ps.srtt + 0.125 * ms
    }
  }

  private lied (ps: PeerState, cid: CID, err: Error): void {
    this.counts.badBlocks++
    this.peerCounters(ps.id).badBlocks++
    this.bad.add(ps.id)
    this.log.warn({ peer: ps.id, cid: cid.toString(), err: err.message }, 'peer sent a block that does not match its CID; not asking it again')
  }

  /**
   * Queues `cid` for a peer (or joins a want for it already queued or sent); `deliver` gets the
   * answer. Returns a cancel function: a want nobody waits for any more is dropped if not sent.
   */
  private ask (ps: PeerState, cid: CID, priority: BlockPriority, flags: number, deliver: (a: Answer) => void): () => void {
    const key = keyOf(cid)
    let want = ps.sent.get(key) ?? queuedWant(ps, key)
    if (want == null) {
      want = { cid, key, priority, flags, waiters: new Set() }
      ps.queued[priority].set(key, want)
    } else if (ps.sent.get(key) !== want) {
      want.flags &= flags
      if (RANK[priority] < RANK[want.priority]) {
        // wanted more urgently now: it goes ahead of the queue it was in
        ps.queued[want.priority].delete(key)
        want.priority = priority
        ps.queued[priority].set(key, want)
      }
    }
    const w = want
    w.waiters.add(deliver)
    this.schedule(ps)
    return () => {
      w.waiters.delete(deliver)
      if (w.waiters.size > 0) return
      if (ps.queued[w.priority].get(key) === w) ps.queued[w.priority].delete(key)
    }
  }

  /** Flushes a peer's queues once the current tick has queued what it will. */
  private schedule (ps: PeerState): void {
    if (ps.scheduled) return
    ps.scheduled = true
    setImmediate(() => {
      ps.scheduled = false
      this.pump(ps)
    })
  }

  /**
   * Sends what may go now, most urgent first: on-demand wants in any of the `maxRequestsPerPeer`
   * requests; prefetch ones in what those leave, but never in the last `demandReservedRequests`
   * (so an on-demand want finds a request free at once, however big the prefetch burst);
   * background ones only on an idle link (no on-demand or prefetch request in flight).
   */
  private pump (ps: PeerState): void {
    if (!this.running) return
    const max = this.opts.maxRequestsPerPeer
    const busy = (): number => ps.inFlight.demand + ps.inFlight.prefetch
    this.sendQueued(ps, 'demand', () => max - busy())
    this.sendQueued(ps, 'prefetch', () => Math.min(max - busy(), max - this.opts.demandReservedRequests - ps.inFlight.prefetch))
    const bg = ps.queued.background
    while (bg.size > 0 && busy() === 0 && ps.inFlight.background < this.opts.maxBackgroundRequests) {
      void this.request(ps, this.take(ps, bg, this.opts.backgroundRequestCids), 'background')
    }
  }

  /** Sends a queue's wants in as many requests as `free()` allows now. */
  private sendQueued (ps: PeerState, priority: 'demand' | 'prefetch', free: () => number): void {
    const queue = ps.queued[priority]
    for (let n = free(); queue.size > 0 && n > 0; n = free()) {
      // a long queue is spread over the requests still allowed, in bigger batches
      const perRequest = Math.ceil(queue.size / n)
      void this.request(ps, this.take(ps, queue, Math.min(this.opts.maxCidsPerRequest, Math.max(this.opts.requestCids, perRequest))), priority)
    }
  }

  /** Up to n wants of the queue, in order, all with the same flags (they are per request). */
  private take (ps: PeerState, queue: Map<string, Want>, n: number): Want[] {
    const out: Want[] = []
    for (const [key, want] of queue) {
      if (out.length === n) break
      if (out.length > 0 && want.flags !== out[0].flags) continue
      queue.delete(key)
      ps.sent.set(key, want)
      out.push(want)
    }
    return out
  }

  private deliver (ps: PeerState, want: Want, answer: Answer): void {
    if (ps.sent.get(want.key) === want) ps.sent.delete(want.key)
    for (const w of [...want.waiters]) w(answer)
  }

  /**
   * One request; every want gets an answer (a failure answers the unanswered ones). Uses an idle
   * stream to the peer if there is one: opening a stream costs a multistream-select round trip.
   * A pooled stream that fails before any answer (the peer closed it while idle) is replaced by
   * a new one once.
   */
  private async request (ps: PeerState, wants: Want[], priority: BlockPriority): Promise<void> {
    // counted at once (before any await): `pump` reads it to decide what may go next
    ps.inFlight[priority]++
    this.counts.requests++
    if (priority === 'prefetch') this.counts.prefetchRequests++
    if (priority === 'background') this.counts.backgroundRequests++
    const background = priority === 'background'
    if (this.log.isLevelEnabled('debug')) this.log.debug({ peer: ps.id, cids: wants.map(w => w.cid.toString()), priority }, 'block exchange: asking')
    const progress = { answered: 0 }
    let pooled = this.takeIdle(ps)
    try {
      for (;;) {
        try {
          await this.attempt(ps, pooled, wants, progress, background)
          return
        } catch (err) {
          if (pooled != null && progress.answered === 0 && this.running) { pooled = undefined; continue }
          this.counts.failedRequests++
          this.peerCounters(ps.id).failedRequests++
          this.log.debug({ peer: ps.id, err: (err as Error).message }, 'block exchange request failed')
          if (err instanceof BlockExchangeTimeoutError && ++ps.timeouts >= this.opts.maxTimeouts && !this.suspended.has(ps.id)) {
            this.counts.suspensions++
            this.suspended.set(ps.id, Date.now() + this.opts.suspendMs)
            this.log.warn({ peer: ps.id, timeouts: ps.timeouts, ms: this.opts.suspendMs }, 'peer keeps timing out; not asking it for a while')
          }
          const failed: Answer = { failed: err as Error }
          for (const want of wants.slice(progress.answered)) this.deliver(ps, want, failed)
          return
        }
      }
    } finally {
      ps.inFlight[priority]--
      if (PRIORITIES.some(p => ps.queued[p].size > 0)) this.schedule(ps)
    }
  }

  private async attempt (ps: PeerState, pooled: Conn | undefined, wants: Want[], progress: { answered: number }, background: boolean): Promise<void> {
    const deadline = new Deadline(this.opts.requestTimeout, () => new BlockExchangeTimeoutError(`no answer from ${ps.id} within ${this.opts.requestTimeout} ms`))
    let conn = pooled
    try {
      if (conn == null) {
        const stream = await this.libp2p.dialProtocol(ps.peer, PROTOCOLS, { signal: deadline.signal })
        this.counts.streamsOpened++
        this.track(ps, stream)
        conn = { stream, lp: lengthPrefixed(stream, this.clientFraming(), prefixTooLong) }
      }
      if (!this.running) throw new AbortError('block exchange stopped')
      const rest = wants.slice(progress.answered)
      const sentAt = performance.now()
      const cids = rest.map(w => w.cid.bytes)
      if (conn.stream.protocol === PROTOCOL_COOPERATIVE) {
        cids.unshift(Uint8Array.of(FLAG_RANKED | rest[0].flags | (background ? FLAG_BACKGROUND : 0)))
      }
      await conn.lp.write(Buffer.concat(cids), { signal: deadline.signal })
      const pendingAllowed = conn.stream.protocol === PROTOCOL_PENDING || conn.stream.protocol === PROTOCOL_COOPERATIVE
      for (const [idx, want] of rest.entries()) {
        let frame = await conn.lp.read({ signal: deadline.signal })
        deadline.arm()
        let waited = false
        if (pendingAllowed && frame.byteLength === 1 && frame.get(0) === PENDING) {
          waited = true
          this.counts.pendingAnswers++
          // the answers after it wait in line behind it: hold their hedges too
          for (const w of rest.slice(idx)) for (const waiter of [...w.waiters]) waiter({ pending: true })
          frame = await conn.lp.read({ signal: deadline.signal })
          deadline.arm()
        }
        const status = frame.byteLength > 0 ? frame.get(0) : -1
        let answer: Answer
        if (status === DONT_HAVE && frame.byteLength === 1) {
          this.counts.dontHaves++
          answer = { dontHave: true }
        } else if (status === HAVE || (status === HAVE_SEED && conn.stream.protocol === PROTOCOL_COOPERATIVE)) {
          ps.seed = status === HAVE_SEED
          // an answer the peer waited for its own fetch to bring says nothing of the link
          if (want === rest[0] && !waited) this.sample(ps, performance.now() - sentAt)
          answer = { have: frame.subarray(1), counted: false }
        } else {
          throw new BlockExchangeProtocolError(`${ps.id} sent status ${status} for ${want.cid.toString()}`)
        }
        progress.answered++
        ps.timeouts = 0
        this.deliver(ps, want, answer)
      }
      this.putIdle(ps, conn)
    } catch (err) {
      const e = deadline.signal.aborted ? deadline.signal.reason as Error : asProtocolError(err)
      conn?.stream.abort(e)
      throw e
    } finally {
      deadline.clear()
    }
  }

  /** Frame limits of the client side: a block and its status byte; unread answers bounded. */
  private clientFraming (): { maxDataLength: number, maxBufferSize: number } {
    return { maxDataLength: this.opts.maxBlockSize + 1, maxBufferSize: this.opts.requestCids * (this.opts.maxBlockSize + 16) }
  }

  /** Every open stream of ours (inbound and outbound), aborted at stop. */
  private track (ps: PeerState | undefined, stream: Stream): void {
    this.streams.add(stream)
    stream.addEventListener('close', () => {
      this.streams.delete(stream)
      if (ps != null) {
        const i = ps.idle.findIndex(c => c.stream === stream)
        if (i >= 0) ps.idle.splice(i, 1)
      }
    }, { once: true })
  }

  private takeIdle (ps: PeerState): Conn | undefined {
    while (ps.idle.length > 0) {
      const c = ps.idle.pop() as Conn
      clearTimeout(c.idleTimer)
      if (c.stream.status === 'open' && c.stream.remoteWriteStatus === 'writable') return c
      c.stream.abort(new AbortError('stale'))
    }
    return undefined
  }

  private putIdle (ps: PeerState, conn: Conn): void {
    if (!this.running || this.peerStates.get(ps.id) !== ps || ps.idle.length >= this.opts.maxIdleStreams) {
      // Half-close: the server sees the end and closes its side.
      conn.stream.close().catch(() => {})
      return
    }
    ps.idle.push(conn)
    conn.idleTimer = setTimeout(() => {
      const i = ps.idle.indexOf(conn)
      if (i < 0) return
      ps.idle.splice(i, 1)
      this.counts.idleStreamsClosed++
      conn.stream.close().catch(() => {})
    }, this.opts.idleStreamTimeout)
    conn.idleTimer.unref()
  }

  /**
   * Server: answers requests on the stream one after the other, each CID from the local
   * blockstore, until the client ends the stream. The first request must come within
   * `requestTimeout`; each later one within `serveIdleTimeout` of the last answer, else the
   * stream is closed (the client opens another when it needs one). A malformed or oversized
   * request closes the stream.
   */
  private async serve (stream: Stream, connection: Connection, protocol: string): Promise<void> {
    const peer = connection.remotePeer.toString()
    this.track(undefined, stream)
    const pendingFrames = protocol !== PROTOCOL
    const flagged = protocol === PROTOCOL_COOPERATIVE
    // one byte more for 1.2.0's flags
    const maxRequest = this.opts.maxCidsPerRequest * this.opts.maxCidBytes + 1
    const lp = lengthPrefixed(stream, { maxDataLength: maxRequest, maxBufferSize: 2 * maxRequest }, prefixTooLong)
    const deadline = new Deadline(this.opts.requestTimeout, () => new BlockExchangeTimeoutError(`no request from ${peer} within ${this.opts.requestTimeout} ms`))
    // between requests: not an error when it fires, the stream is just closed
    const idle = new Deadline(this.opts.serveIdleTimeout, () => new AbortError('idle stream'))
    idle.clear()
    // the asker's waits registered in `waiting`, released once answered, or when the stream ends
    const waits = new Set<Waiting>()
    try {
      for (let first = true; ; first = false) {
        let body
        try {
          if (!first) idle.arm()
          body = await lp.read({ signal: first ? deadline.signal : idle.signal })
        } catch (err) {
          // The client closed its end: the conversation is over (it-length-prefixed's error, known by name).
          if ((err as Error).name === 'UnexpectedEOFError') break
          if (idle.signal.aborted) {
            this.counts.idleStreamsClosed++
            break
          }
          throw err
        }
        idle.clear()
        deadline.clear()
        let request = body.subarray()
        let flags = 0
        if (flagged) {
          flags = request[0] ?? 0
          if ((flags & ~KNOWN_FLAGS) !== 0) throw new BlockExchangeProtocolError(`unknown request flags 0x${flags.toString(16)}`)
          request = request.subarray(1)
        }
        const cids = decodeRequest(request, this.opts.maxCidsPerRequest, this.opts.maxCidBytes)
        this.counts.servedRequests++
        // what was asked, in order (learned prefetch is checked by it); the CIDs' text only when it is logged
        if (this.log.isLevelEnabled('debug')) this.log.debug({ peer, cids: cids.map(c => c.toString()) }, 'block exchange: serving a request')
        // each CID read ahead, and for one we do not hold, the fetch we will wait on decided then
        // (so the cooperative fetches of one request run at once, not one after the other)
        const reads: Array<Promise<Uint8Array | Waiting | undefined>> = []
        const ready: boolean[] = []
        const readAhead = (upTo: number): void => {
          for (let j = reads.length; j < Math.min(upTo, cids.length); j++) {
            reads.push(this.local(cids[j]).then(bytes => bytes ?? this.fetchToWaitOn(cids[j], peer, flags, waits)).finally(() => { ready[j] = true }))
          }
        }
        // answers waiting to be written together
        let batch: Uint8Array[] = []
        let batchBytes = 0
        const flush = async (): Promise<void> => {
          if (batch.length === 0) return
          const frames = batch
          batch = []
          batchBytes = 0
          if (stream.status !== 'open') throw new BlockExchangeProtocolError(`stream ${stream.status} while answering`)
          deadline.arm(() => new BlockExchangeTimeoutError(`${peer} did not take an answer within ${this.opts.requestTimeout} ms`))
          this.counts.servedWrites++
          await lp.writeV(frames, { signal: deadline.signal })
          deadline.clear()
        }
        for (let i = 0; i < cids.length; i++) {
          readAhead(i + this.opts.serveReadAhead)
          if (ready[i] !== true && batchBytes >= this.opts.serveHoldBytes) await flush()
          const read = await reads[i]
          let bytes: Uint8Array | undefined
          if (read instanceof Waiting) {
            await flush()
            if (pendingFrames) {
              // tell the asker we are on it, so it waits for us instead of asking another peer
              batch.push(Uint8Array.of(PENDING))
              await flush()
            }
            bytes = await this.waitFor(read.fetching)
            read.release()
          } else {
            bytes = read
          }
          if (bytes == null) {
            this.counts.servedDontHaves++
            batch.push(Uint8Array.of(DONT_HAVE))
            batchBytes += 1
          } else {
            this.counts.servedBlocks++
            this.counts.servedBytes += bytes.length
            const pc = this.peerCounters(peer)
            pc.blocksServed++
            pc.bytesServed += bytes.length
            batch.push(Buffer.concat([Uint8Array.of(flagged && this.seeding?.() === true ? HAVE_SEED : HAVE), bytes]))
            batchBytes += bytes.length + 1
          }
          if (batchBytes >= this.opts.serveBatchBytes) await flush()
        }
        await flush()
      }
      // Await the close: libp2p may tear the stream down once this handler returns.
      await stream.close({ signal: AbortSignal.timeout(this.opts.requestTimeout) })
    } catch (err) {
      const e = deadline.signal.aborted ? deadline.signal.reason as Error : asProtocolError(err)
      if (e instanceof BlockExchangeProtocolError || e instanceof BlockExchangeTimeoutError) {
        this.counts.rejectedRequests++
        this.log.warn({ peer, err: e.message }, 'block exchange: closing a bad inbound stream')
      } else {
        this.log.debug({ peer, err: e.message }, 'block exchange: inbound stream ended')
      }
      stream.abort(e)
    } finally {
      deadline.clear()
      idle.clear()
      for (const w of [...waits]) w.release()
    }
  }

  /**
   * For a block we do not hold: the fetch of ours the asker may wait on (ours, or a cooperative
   * one started now), registered in `waiting` while it waits; undefined to answer don't-have.
   */
  private fetchToWaitOn (cid: CID, peer: string, flags: number, waits: Set<Waiting>): Waiting | undefined {
    const mayFetch = (flags & FLAG_NO_FETCH) === 0
    const background = (flags & FLAG_BACKGROUND) !== 0
    // while it waits, our fetch of this block does not ask the asker (registered before a
    // cooperative fetch starts and picks its peers)
    const key = keyOf(cid)
    let askers = this.waiting.get(key)
    if (askers == null) this.waiting.set(key, askers = new Set())
    const set = askers
    const fresh = !set.has(peer)
    set.add(peer)
    const forget = (): void => {
      if (fresh) set.delete(peer)
      if (set.size === 0 && this.waiting.get(key) === set) this.waiting.delete(key)
    }
    let fetching: Promise<Uint8Array | undefined> | undefined
    if ((flags & FLAG_RANKED) === 0) {
      // a 1.0.0/1.1.0 peer: wait on our fetch unless the two of us would wait on each other
      fetching = this.whenFetched(cid, peer) ?? (mayFetch ? this.cooperate(cid, background) : undefined)
    } else if (this.ranksAbove(cid, peer)) {
      fetching = this.inflight?.(cid) ?? (mayFetch ? this.cooperate(cid, background) : undefined)
    } else {
      this.counts.rankedDontHaves++
    }
    if (fetching == null) {
      forget()
      return undefined
    }
    const w = new Waiting(fetching, () => {
      waits.delete(w)
      forget()
    })
    waits.add(w)
    return w
  }

  /**
   * A block we do not hold but are fetching right now (for ourselves or cooperatively): our
   * fetch, whose bytes are verified against the CID there; `waitFor` bounds the wait. Two nodes
   * asking each other for the same block would wait on each other: of the two, the one with the
   * greater peer id answers don't-have at once, so the other moves on (to the origin, say) while
   * the first keeps waiting on it. (Both answering don't-have would send both to the origin.)
   */
  private whenFetched (cid: CID, peer: string): Promise<Uint8Array | undefined> | undefined {
    const pending = this.inflight?.(cid)
    if (pending == null) return undefined
    const asker = this.peerStates.get(peer)
    const key = keyOf(cid)
    const cycle = asker != null && (asker.sent.has(key) || queuedWant(asker, key) != null)
    if (cycle && this.libp2p.peerId.toString() > peer) return undefined
    return pending
  }

  /**
   * Do we rank above `peer` for this block? The order is the rendezvous hash `ranked` uses (the
   * peer whose factor is smaller is preferred), the same on every node. A 1.2.0 asker is waited
   * for (on our fetch, or on a cooperative one we start) only by a node that ranks above it, so
   * every chain of waits climbs in rank and none can close into a cycle: nodes that start
   * together and ask one another end up waiting on the one that ranks highest among them,
   * which fetches the block once.
   */
  private ranksAbove (cid: CID, peer: string): boolean {
    return ranksAbove(cid, this.libp2p.peerId.toString(), peer)
  }

  /**
   * A cooperative fetch: a block we neither hold nor fetch, asked by a peer, that we would fetch
   * for ourselves (a link of a DAG we have open). Fetched now (at the asker's priority), so the
   * peers that ask us first for it (rendezvous hashing makes them agree) wait on one copy from
   * the origin instead of each fetching their own. Any other CID, or past
   * `maxCooperativeFetches`, is not fetched: a stranger cannot make us fetch what we would not.
   */
  private cooperate (cid: CID, background: boolean): Promise<Uint8Array | undefined> | undefined {
    if (this.fetchFor == null || this.wanted == null || this.opts.maxCooperativeFetches === 0 || !this.running) return undefined
    if (!this.wanted(cid)) return undefined
    if (this.cooperating >= this.opts.maxCooperativeFetches) {
      this.counts.cooperativeBusy++
      return undefined
    }
    this.cooperating++
    this.counts.cooperativeFetches++
    return this.fetchFor(cid, { background }).catch(() => undefined).finally(() => { this.cooperating-- })
  }

  private async waitFor (pending: Promise<Uint8Array | undefined>): Promise<Uint8Array | undefined> {
    let timer: NodeJS.Timeout | undefined
    const bytes = await Promise.race([
      pending.catch(() => undefined),
      new Promise<undefined>(resolve => { timer = setTimeout(() => { resolve(undefined) }, this.opts.serveWaitMs) })
    ]).finally(() => clearTimeout(timer))
    if (bytes == null || bytes.length > this.opts.maxBlockSize) {
      this.counts.waitsInVain++
      return undefined
    }
    this.counts.servedAfterWait++
    return bytes
  }

  /** A block from the local blockstore only, if it fits the size limit. */
  private async local (cid: CID): Promise<Uint8Array | undefined> {
    try {
      // No `has` first: a missing block makes `get` throw, one file operation instead of two.
      const bytes = await collectBlock(this.blockstore.get(cid))
      return bytes.length <= this.opts.maxBlockSize ? bytes : undefined
    } catch {
      return undefined
    }
  }
}

/** A fetch an asker waits on, and how to forget that it waits (idempotent). */
class Waiting {
  private released = false
  constructor (readonly fetching: Promise<Uint8Array | undefined>, private readonly onRelease: () => void) {}

  release (): void {
    if (this.released) return
    this.released = true
    this.onRelease()
  }
}

/** A frame's length prefix longer than the largest frame allowed needs: the peer broke the wire format. */
function prefixTooLong (bytes: number): Error {
  return new BlockExchangeProtocolError(`a frame's length prefix runs past ${bytes} bytes`)
}

/** lpStream's framing errors (it-length-prefixed's, known by name), as ours: the peer broke the wire format. */
const FRAMING_ERRORS = new Set(['InvalidDataLengthError', 'InvalidDataLengthLengthError', 'InvalidMessageLengthError', 'StreamBufferError', 'UnexpectedEOFError'])

function asProtocolError (err: unknown): Error {
  const e = err as Error
  return FRAMING_ERRORS.has(e.name) ? new BlockExchangeProtocolError(e.message) : e
}

function verifySha256 (cid: CID, bytes: Uint8Array): void {
  const digest = createHash('sha256').update(bytes).digest()
  if (Buffer.compare(digest, cid.multihash.digest) !== 0) throw new BlockDigestMismatchError(cid.toString())
}

/**
 * An abort signal that fires `ms` after the last `arm()` (one timer, re-armed per frame, instead
 * of a new AbortSignal.timeout for each).
 */
class Deadline {
  private readonly controller = new AbortController()
  private timer: NodeJS.Timeout | undefined

  constructor (private readonly ms: number, private reason: () => Error) {
    setMaxListeners(Infinity, this.controller.signal)
    this.arm()
  }

  get signal (): AbortSignal {
    return this.controller.signal
  }

  arm (reason?: () => Error): void {
    if (reason != null) this.reason = reason
    clearTimeout(this.timer)
    this.timer = setTimeout(() => { this.controller.abort(this.reason()) }, this.ms)
  }

  clear (): void {
    clearTimeout(this.timer)
    this.timer = undefined
  }
}

/** A want of this peer's queues not sent yet. */
function queuedWant (ps: PeerState, key: string): Want | undefined {
  return ps.queued.demand.get(key) ?? ps.queued.prefetch.get(key) ?? ps.queued.background.get(key)
}

function emptyStats (): BlockExchangeStats {
  return { requests: 0, prefetchRequests: 0, backgroundRequests: 0, failedRequests: 0, streamsOpened: 0, blocksReceived: 0, bytesReceived: 0, dontHaves: 0, badBlocks: 0, hedges: 0, hedgesSkipped: 0, servedRequests: 0, servedBlocks: 0, servedBytes: 0, servedDontHaves: 0, servedWrites: 0, rejectedRequests: 0, servedAfterWait: 0, waitsInVain: 0, idleStreamsClosed: 0, suspensions: 0, pendingAnswers: 0, cooperativeFetches: 0, cooperativeBusy: 0, rankedDontHaves: 0 }
}

/**
 * Does peer `a` rank above peer `b` for this block (1.2.0's order: the smaller rendezvous factor
 * of `ranked`, then the smaller id)? The same answer on every node.
 */
export function ranksAbove (cid: CID, a: string, b: string): boolean {
  const fa = spread(a, cid.multihash.digest)
  const fb = spread(b, cid.multihash.digest)
  return fa < fb || (fa === fb && a < b)
}

/** A number in [0, 1) from a hash of (peer, block): the same on every node. */
function spread (peer: string, key: Uint8Array): number {
  // FNV-1a over both: cheap, and good enough to break ties evenly
  let h = 0x811c9dc5
  for (let i = 0; i < peer.length; i++) h = Math.imul(h ^ peer.charCodeAt(i), 0x01000193)
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key[i], 0x01000193)
  return (h >>> 0) / 0x100000000
}

/** A request's body: the CIDs' bytes back to back (CIDs delimit themselves). */
export function encodeRequest (cids: CID[]): Uint8Array {
  return Buffer.concat(cids.map(c => c.bytes))
}

function decodeRequest (body: Uint8Array, maxCids: number, maxCidBytes: number): CID[] {
  const cids: CID[] = []
  let rest = body
  while (rest.length > 0) {
    if (cids.length === maxCids) throw new BlockExchangeProtocolError(`request holds more than ${maxCids} CIDs`)
    let cid: CID
    let next: Uint8Array
    try {
      [cid, next] = CID.decodeFirst(rest)
    } catch (err) {
      throw new BlockExchangeProtocolError(`malformed CID in request: ${(err as Error).message}`)
    }
    if (rest.length - next.length > maxCidBytes) throw new BlockExchangeProtocolError(`CID longer than ${maxCidBytes} bytes in request`)
    cids.push(cid)
    rest = next
  }
  if (cids.length === 0) throw new BlockExchangeProtocolError('empty request')
  return cids
}
