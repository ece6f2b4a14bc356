import { createHash } from 'node:crypto'
import { setMaxListeners } from 'node:events'
import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import type { Logger } from '../logging.js'
import { ByteReader } from '../estargz/byte-reader.js'
import { collectBlock } from './dag-reader.js'
import { AbortError, BlockExchangeProtocolError, BlockExchangeTimeoutError, InvalidIpfsOptionError } from './errors.js'

/** The protocol id announced through identify. */
export const PROTOCOL = '/ipfs-estargz/blocks/1.0.0'

/**
 * A map key for a CID. Not `cid.toString()`: that caches the base32 text on the CID object, built
 * one character at a time (a rope of ~50 V8 cons strings, ~1.5 KB), and the CIDs of the interior
 * nodes a reader keeps live as long as the layer is mounted: 20 MB of heap for one image.
 */
function keyOf (cid: CID): string {
  return Buffer.from(cid.bytes.buffer, cid.bytes.byteOffset, cid.bytes.byteLength).toString('base64')
}

/** Response status bytes. */
const DONT_HAVE = 0
const HAVE = 1

/** Block-exchange defaults, in one place. */
export const DEFAULTS = {
  /** CIDs in one request; a bigger batch is split into several requests. */
  maxCidsPerRequest: 64,
  /** Largest block served or accepted: bitswap's limit (our leaves are ≤ 1 MiB). */
  maxBlockSize: 4 * 1024 * 1024,
  /** Largest CID in a request: a sha2-256 CIDv1 is 36 bytes; this leaves room for others. */
  maxCidBytes: 128,
  /**
   * A request (or a server waiting for one) fails after this many ms without a frame. It bounds
   * how long a silent peer delays the bitswap fallback, not the time a big answer may take.
   */
  requestTimeout: 5_000,
  /** Concurrent inbound / outbound streams of this protocol per connection. */
  maxInboundStreams: 64,
  maxOutboundStreams: 64,
  /** Peers asked, one after the other, before `get` gives up (→ bitswap). */
  peersPerBlock: 3,
  /** Idle streams kept open per peer for the next requests. */
  maxIdleStreams: 4
} as const

export interface BlockExchangeOptions {
  maxCidsPerRequest?: number
  maxBlockSize?: number
  maxCidBytes?: number
  requestTimeout?: number
  maxInboundStreams?: number
  maxOutboundStreams?: number
  peersPerBlock?: number
  maxIdleStreams?: number
}

/** What the exchange needs of a blockstore (FsBlockstore fits). */
export interface ExchangeBlockstore {
  /** Throws (or yields nothing) when the block is not there. */
  get: (cid: CID) => Iterable<Uint8Array> | AsyncIterable<Uint8Array>
  put: (cid: CID, bytes: Uint8Array) => Promise<unknown>
}

export interface BlockExchangeComponents {
  libp2p: Pick<Libp2p, 'handle' | 'unhandle' | 'register' | 'unregister' | 'dialProtocol' | 'getConnections' | 'peerStore'>
  /** The LOCAL blockstore: the server reads only this (it must never fetch from the network). */
  blockstore: ExchangeBlockstore
  logger: Logger
}

/** Counters since start (client side, then server side). */
export interface BlockExchangeStats {
  /** Requests sent (each one stream, ≤ maxCidsPerRequest CIDs). */
  requests: number
  /** Requests that failed (stream error, timeout, protocol violation, peer gone). */
  failedRequests: number
  /** Verified blocks received and stored, and their bytes. */
  blocksReceived: number
  bytesReceived: number
  /** Don't-have answers received. */
  dontHaves: number
  /** Blocks whose bytes did not hash to their CID (rejected, not stored; the peer is skipped). */
  badBlocks: number
  /** Requests answered, blocks (and bytes) served, don't-haves sent. */
  servedRequests: number
  servedBlocks: number
  servedBytes: number
  servedDontHaves: number
  /** Inbound streams closed because the request was malformed, oversized or too slow. */
  rejectedRequests: number
}

export interface GetOptions {
  signal?: AbortSignal
}

/** What one peer answered for one CID: the verified bytes, don't-have, or bytes that lied. */
type Outcome = Uint8Array | undefined | typeof BAD
const BAD = Symbol('bad block')

interface Waiter {
  resolve: (o: Outcome) => void
  reject: (err: Error) => void
}

/** A stream to a peer with its frame reader (which may hold bytes already read). */
interface Conn {
  stream: Stream
  reader: FrameReader
}

interface Want {
  cid: CID
  waiters: Set<Waiter>
}

/**
 * `/ipfs-estargz/blocks/1.0.0`: fetch blocks from our own peers in one round trip.
 *
 * Bitswap opens a new stream for every message in each direction (want, then block), and every
 * stream opened costs a multistream-select round trip plus a peer-store write on both sides. Here
 * the client writes the CIDs it wants on a stream it keeps open (a few idle streams per peer are
 * pooled), the server answers each CID in order, and the stream waits for the next request.
 * Wire format (lengths are unsigned varints):
 *
 *   request  = varint(len) CID-bytes…        (≤ maxCidsPerRequest CIDs back to back; they delimit
 *                                             themselves; len ≤ maxCidsPerRequest × maxCidBytes)
 *   response = one frame per CID, in order:  varint(1 + len) 0x01 block-bytes   (have)
 *                                            varint(1)       0x00               (don't have)
 *
 * Either side ends the conversation by closing its end. The server reads only the local
 * blockstore. The client verifies every block against its CID (sha2-256 only; other hashes skip
 * the exchange) before storing it, so a lying peer costs a wasted request, never a bad block.
 * Gets for the same peer issued in the same tick go out as one request, so a chunk spanning
 * several leaves costs one round trip. Bitswap stays the fallback (`get` → undefined) and the
 * protocol for other IPFS nodes.
 */
export class BlockExchange {
  private readonly libp2p: BlockExchangeComponents['libp2p']
  private readonly blockstore: BlockExchangeComponents['blockstore']
  private readonly log: Logger
  private readonly opts: Required<BlockExchangeOptions>
  private readonly counts: BlockExchangeStats = emptyStats()
  /** Connected peers that announced the protocol, by id string. */
  private readonly peerSet = new Map<string, PeerId>()
  /** Peers that sent bytes that did not match the CID: never asked again. */
  private readonly bad = new Set<string>()
  /** Per-peer wants collected during this tick, flushed by setImmediate. */
  private readonly pending = new Map<string, { peer: PeerId, wants: Map<string, Want> }>()
  private readonly streams = new Set<Stream>()
  /** Verified blocks being written to the blockstore, and those writes. */
  private readonly storing = new Map<string, Uint8Array>()
  private readonly puts = new Set<Promise<void>>()
  /** Streams to each peer waiting for the next request. */
  private readonly idle = new Map<string, Conn[]>()
  private lastAnswered: string | undefined
  private topologyId: string | undefined
  private running = false

  constructor (components: BlockExchangeComponents, options: BlockExchangeOptions = {}) {
    this.libp2p = components.libp2p
    this.blockstore = components.blockstore
    this.log = components.logger.child({ component: 'block-exchange' })
    this.opts = { ...DEFAULTS, ...options }
    for (const [k, v] of Object.entries(this.opts)) {
      if (!Number.isInteger(v) || v < 1) throw new InvalidIpfsOptionError(`block exchange: ${k} must be a positive integer, got ${String(v)}`)
    }
  }

  isStarted (): boolean {
    return this.running
  }

  async start (): Promise<void> {
    if (this.running) return
    await this.libp2p.handle(PROTOCOL, async (stream, connection) => { await this.serve(stream, connection) }, {
      maxInboundStreams: this.opts.maxInboundStreams,
      maxOutboundStreams: this.opts.maxOutboundStreams
    })
    this.topologyId = await this.libp2p.register(PROTOCOL, {
      onConnect: (peer) => { this.peerSet.set(peer.toString(), peer) },
      onDisconnect: (peer) => {
        this.peerSet.delete(peer.toString())
        if (this.lastAnswered === peer.toString()) this.lastAnswered = undefined
      }
    })
    this.running = true
    // Peers connected before start were identified already: no onConnect for them.
    await Promise.all(this.libp2p.getConnections().map(async (c) => {
      try {
        const p = await this.libp2p.peerStore.get(c.remotePeer)
        if (p.protocols.includes(PROTOCOL)) this.peerSet.set(c.remotePeer.toString(), c.remotePeer)
      } catch {}
    }))
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    if (this.topologyId != null) this.libp2p.unregister(this.topologyId)
    await this.libp2p.unhandle(PROTOCOL).catch(() => {})
    for (const s of [...this.streams]) s.abort(new AbortError('block exchange stopped'))
    this.streams.clear()
    this.idle.clear()
    for (const { wants } of this.pending.values()) {
      for (const w of wants.values()) for (const waiter of w.waiters) waiter.resolve(undefined)
    }
    this.pending.clear()
    this.peerSet.clear()
    await this.stored()
  }

  /**
   * A block received and verified whose write to the blockstore is still under way (callers that
   * count where blocks come from treat it as local: it does not cross the network again).
   */
  peek (cid: CID): Uint8Array | undefined {
    return this.storing.get(keyOf(cid))
  }

  /** Resolves when every block received so far is in the local blockstore. */
  async stored (): Promise<void> {
    while (this.puts.size > 0) await Promise.all([...this.puts])
  }

  stats (): BlockExchangeStats {
    return { ...this.counts }
  }

  /** Connected peers that speak the protocol (minus the ones that lied), best first. */
  peers (): PeerId[] {
    const list = [...this.peerSet.values()].filter(p => !this.bad.has(p.toString()))
    const i = list.findIndex(p => p.toString() === this.lastAnswered)
    if (i > 0) list.unshift(...list.splice(i, 1))
    return list
  }

  /**
   * The block from a connected peer, verified and stored in the local blockstore (the write
   * completes in the background: see `stored()`); undefined when no peer asked has it (or
   * answers), or the CID's hash is not sha2-256 — the caller then falls back to bitswap. Does
   * not look in the local blockstore first: the caller does.
   * Rejects only with AbortError, when `signal` fires.
   */
  async get (cid: CID, options: GetOptions = {}): Promise<Uint8Array | undefined> {
    const { signal } = options
    if (signal?.aborted === true) throw new AbortError(`block ${cid.toString()}: aborted`)
    const storing = this.storing.get(keyOf(cid))
    if (storing != null) return storing
    if (!this.running || cid.multihash.code !== sha256.code) return undefined
    for (const peer of this.peers().slice(0, this.opts.peersPerBlock)) {
      if (!this.running || this.bad.has(peer.toString())) continue
      let outcome: Outcome
      try {
        outcome = await this.fetchFrom(peer, cid, signal)
      } catch (err) {
        if (err instanceof AbortError && isAborted(signal)) throw err
        this.log.debug({ peer: peer.toString(), cid: cid.toString(), err: (err as Error).message }, 'block exchange request failed')
        continue
      }
      if (outcome instanceof Uint8Array) return outcome
    }
    return undefined
  }

  /** Queues `cid` for `peer`; every want for a peer in this tick goes out in one request. */
  private async fetchFrom (peer: PeerId, cid: CID, signal?: AbortSignal): Promise<Outcome> {
    const key = peer.toString()
    let batch = this.pending.get(key)
    if (batch == null) {
      const b = { peer, wants: new Map<string, Want>() }
      this.pending.set(key, b)
      batch = b
      setImmediate(() => { this.flush(key, b) })
    }
    const cidKey = keyOf(cid)
    let want = batch.wants.get(cidKey)
    if (want == null) {
      want = { cid, waiters: new Set() }
      batch.wants.set(cidKey, want)
    }
    const w = want
    const wants = batch.wants
    return await new Promise<Outcome>((resolve, reject) => {
      const onAbort = (): void => {
        w.waiters.delete(waiter)
        // Not sent yet and nobody else waits: drop it from the request.
        if (w.waiters.size === 0 && this.pending.get(key)?.wants === wants) wants.delete(cidKey)
        reject(new AbortError(`block ${cidKey}: aborted`))
      }
      const waiter: Waiter = {
        resolve: (o) => { signal?.removeEventListener('abort', onAbort); resolve(o) },
        reject: (e) => { signal?.removeEventListener('abort', onAbort); reject(e) }
      }
      w.waiters.add(waiter)
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  private flush (key: string, batch: { peer: PeerId, wants: Map<string, Want> }): void {
    if (this.pending.get(key) === batch) this.pending.delete(key)
    const wants = [...batch.wants.values()].filter(w => w.waiters.size > 0)
    for (let i = 0; i < wants.length; i += this.opts.maxCidsPerRequest) {
      void this.request(batch.peer, wants.slice(i, i + this.opts.maxCidsPerRequest))
    }
  }

  /**
   * One request; settles every want (an error rejects the unanswered ones). Uses an idle stream
   * to the peer if there is one: opening a stream costs a multistream-select round trip and a
   * peer-store write on each side (FsDatastore: ~4 ms on loopback, more than a 1 MiB block's
   * transfer). A pooled stream that fails before any answer (the peer closed it while idle) is
   * replaced by a new one once.
   */
  private async request (peer: PeerId, wants: Want[]): Promise<void> {
    this.counts.requests++
    const progress = { answered: 0 }
    let pooled = this.takeIdle(peer)
    for (;;) {
      try {
        await this.attempt(peer, pooled, wants, progress)
        return
      } catch (err) {
        if (pooled != null && progress.answered === 0 && this.running) { pooled = undefined; continue }
        this.counts.failedRequests++
        for (const want of wants.slice(progress.answered)) for (const w of want.waiters) w.reject(err as Error)
        return
      }
    }
  }

  private async attempt (peer: PeerId, pooled: Conn | undefined, wants: Want[], progress: { answered: number }): Promise<void> {
    const controller = new AbortController()
    setMaxListeners(Infinity, controller.signal)
    let timer: NodeJS.Timeout | undefined
    const arm = (): void => {
      clearTimeout(timer)
      timer = setTimeout(() => { controller.abort(new BlockExchangeTimeoutError(`no answer from ${peer.toString()} within ${this.opts.requestTimeout} ms`)) }, this.opts.requestTimeout)
    }
    arm()
    let conn = pooled
    let onAbort: (() => void) | undefined
    try {
      if (conn == null) {
        const stream = await this.libp2p.dialProtocol(peer, PROTOCOL, { signal: controller.signal })
        this.track(stream)
        conn = { stream, reader: new FrameReader(stream) }
      }
      if (!this.running) throw new AbortError('block exchange stopped')
      const s = conn.stream
      onAbort = () => { s.abort(controller.signal.reason as Error) }
      controller.signal.addEventListener('abort', onAbort, { once: true })
      s.send(encodeRequest(wants.slice(progress.answered).map(w => w.cid)))
      for (const want of wants.slice(progress.answered)) {
        const frame = await conn.reader.next(this.opts.maxBlockSize + 1)
        if (frame == null) throw new BlockExchangeProtocolError(`${peer.toString()} ended the stream after ${progress.answered} of ${wants.length} answers`)
        arm()
        const outcome = await this.check(peer, want.cid, frame)
        progress.answered++
        for (const w of want.waiters) w.resolve(outcome)
      }
      controller.signal.removeEventListener('abort', onAbort)
      this.putIdle(peer, conn)
    } catch (err) {
      const e = (controller.signal.aborted ? controller.signal.reason : err) as Error
      conn?.stream.abort(e)
      throw e
    } finally {
      clearTimeout(timer)
    }
  }

  /** Every open stream of ours (inbound and outbound), aborted at stop. */
  private track (stream: Stream): void {
    this.streams.add(stream)
    stream.addEventListener('close', () => {
      this.streams.delete(stream)
      for (const [key, list] of this.idle) {
        const i = list.findIndex(c => c.stream === stream)
        if (i >= 0) list.splice(i, 1)
        if (list.length === 0) this.idle.delete(key)
      }
    }, { once: true })
  }

  private takeIdle (peer: PeerId): Conn | undefined {
    const list = this.idle.get(peer.toString())
    while (list != null && list.length > 0) {
      const c = list.pop() as Conn
      if (c.stream.status === 'open' && !c.stream.readableEnded) return c
      c.stream.abort(new AbortError('stale'))
    }
    return undefined
  }

  private putIdle (peer: PeerId, conn: Conn): void {
    const key = peer.toString()
    const list = this.idle.get(key) ?? []
    if (!this.running || list.length >= this.opts.maxIdleStreams) {
      // Half-close: the server sees the end and closes its side.
      conn.stream.close().catch(() => {})
      return
    }
    list.push(conn)
    this.idle.set(key, list)
  }

  /** Validates one response frame; a verified block goes to the blockstore. */
  private async check (peer: PeerId, cid: CID, frame: Uint8Array): Promise<Outcome> {
    if (frame[0] === DONT_HAVE && frame.length === 1) {
      this.counts.dontHaves++
      return undefined
    }
    if (frame[0] !== HAVE) throw new BlockExchangeProtocolError(`${peer.toString()} sent status ${frame[0]} for ${cid.toString()}`)
    const bytes = frame.subarray(1)
    const digest = createHash('sha256').update(bytes).digest()
    if (Buffer.compare(digest, cid.multihash.digest) !== 0) {
      this.counts.badBlocks++
      this.bad.add(peer.toString())
      if (this.lastAnswered === peer.toString()) this.lastAnswered = undefined
      this.log.warn({ peer: peer.toString(), cid: cid.toString() }, 'peer sent a block that does not match its CID; not asking it again')
      return BAD
    }
    // Stored in the background (~1 ms a block off the read path); until then `get` answers
    // from memory, and `stop` waits for the writes.
    const key = keyOf(cid)
    this.storing.set(key, bytes)
    const put = this.blockstore.put(cid, bytes).then(() => {}, (err: Error) => {
      // The bytes were verified and handed out: the next read fetches them again.
      this.log.warn({ cid: cid.toString(), err: err.message }, 'cannot store a fetched block')
    }).finally(() => {
      this.storing.delete(key)
      this.puts.delete(put)
    })
    this.puts.add(put)
    this.counts.blocksReceived++
    this.counts.bytesReceived += bytes.length
    this.lastAnswered = peer.toString()
    return bytes
  }

  /**
   * Server: answers requests on the stream one after the other, each CID from the local
   * blockstore, until the client ends the stream. The first request must come within
   * `requestTimeout`; later ones may come whenever (the stream's inactivity timeout, 120 s by
   * default, closes an idle one). A malformed request closes the stream.
   */
  private async serve (stream: Stream, connection: Connection): Promise<void> {
    const peer = connection.remotePeer.toString()
    this.track(stream)
    const signal = AbortSignal.timeout(this.opts.requestTimeout)
    setMaxListeners(Infinity, signal)
    const onTimeout = (): void => { stream.abort(new BlockExchangeTimeoutError(`no request from ${peer} within ${this.opts.requestTimeout} ms`)) }
    signal.addEventListener('abort', onTimeout, { once: true })
    try {
      const reader = new FrameReader(stream)
      for (;;) {
        const body = await reader.next(this.opts.maxCidsPerRequest * this.opts.maxCidBytes)
        signal.removeEventListener('abort', onTimeout)
        if (body == null) break
        const cids = decodeRequest(body, this.opts.maxCidsPerRequest, this.opts.maxCidBytes)
        this.counts.servedRequests++
        for (const cid of cids) {
          const bytes = await this.local(cid)
          if (stream.status !== 'open') throw new BlockExchangeProtocolError(`stream ${stream.status} while answering`)
          let ok: boolean
          if (bytes == null) {
            this.counts.servedDontHaves++
            ok = stream.send(Uint8Array.of(1, DONT_HAVE))
          } else {
            this.counts.servedBlocks++
            this.counts.servedBytes += bytes.length
            // Header and block as two sends: the block bytes are not copied.
            stream.send(Buffer.concat([encodeVarint(bytes.length + 1), Uint8Array.of(HAVE)]))
            ok = stream.send(bytes)
          }
          if (!ok) await stream.onDrain({ signal: AbortSignal.timeout(this.opts.requestTimeout) })
        }
      }
      // Await the close: libp2p may tear the stream down once this handler returns.
      await stream.close({ signal: AbortSignal.timeout(this.opts.requestTimeout) })
    } catch (err) {
      signal.removeEventListener('abort', onTimeout)
      if (err instanceof BlockExchangeProtocolError || err instanceof BlockExchangeTimeoutError) {
        this.counts.rejectedRequests++
        this.log.warn({ peer, err: err.message }, 'block exchange: closing a bad inbound stream')
      } else {
        this.log.debug({ peer, err: (err as Error).message }, 'block exchange: inbound stream ended')
      }
      stream.abort(err as Error)
    }
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

const isAborted = (signal?: AbortSignal): boolean => signal?.aborted === true

function emptyStats (): BlockExchangeStats {
  return { requests: 0, failedRequests: 0, blocksReceived: 0, bytesReceived: 0, dontHaves: 0, badBlocks: 0, servedRequests: 0, servedBlocks: 0, servedBytes: 0, servedDontHaves: 0, rejectedRequests: 0 }
}

export function encodeVarint (n: number): Uint8Array {
  const out: number[] = []
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80)
    n = Math.floor(n / 0x80)
  }
  out.push(n)
  return Uint8Array.from(out)
}

/** The request frame: varint(total) then the CIDs' bytes back to back (CIDs delimit themselves). */
export function encodeRequest (cids: CID[]): Uint8Array {
  const body = Buffer.concat(cids.map(c => c.bytes))
  return Buffer.concat([encodeVarint(body.length), body])
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

/**
 * Reads length-prefixed frames (varint length, then the bytes) off a stream, over the format
 * library's exact-length byte reader. `next` resolves null when the stream ends between frames.
 */
class FrameReader {
  private readonly bytes: ByteReader

  constructor (stream: Stream) {
    this.bytes = new ByteReader(chunksOf(stream))
  }

  async next (max: number): Promise<Uint8Array | null> {
    let len = 0
    let mul = 1
    for (let i = 0; ; i++) {
      const [b] = await this.bytes.read(1)
      if (b === undefined) {
        if (i === 0) return null
        throw new BlockExchangeProtocolError('stream ended inside a frame header')
      }
      len += (b & 0x7f) * mul
      if ((b & 0x80) === 0) break
      mul *= 0x80
      if (i >= 7) throw new BlockExchangeProtocolError('frame length varint too long')
    }
    if (len > max) throw new BlockExchangeProtocolError(`frame of ${len} bytes exceeds the limit of ${max}`)
    const frame = await this.bytes.read(len)
    if (frame.length < len) throw new BlockExchangeProtocolError(`stream ended inside a frame (${frame.length} of ${len} bytes)`)
    return frame
  }
}

/** A libp2p stream's messages as plain byte chunks (they may arrive as Uint8ArrayLists). */
async function * chunksOf (stream: Stream): AsyncGenerator<Uint8Array> {
  for await (const c of stream as AsyncIterable<Uint8Array | { subarray: () => Uint8Array }>) yield c instanceof Uint8Array ? c : c.subarray()
}
