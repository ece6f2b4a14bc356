import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface'
import { CID } from 'multiformats/cid'
import { lengthPrefixed } from '../ipfs/index.js'
import type { Logger } from '../logging.js'
import { AbortError, InvalidOptionError, PrefetchRecordProtocolError, PrefetchRecordTimeoutError } from './errors.js'
import { isRecordCid } from './record.js'

export { PROTOCOL, PROTOCOL_DEFAULTS as DEFAULTS } from './defaults.js'
import { PROTOCOL, PROTOCOL_DEFAULTS as DEFAULTS } from './defaults.js'
import { deadline } from '../signals.js'
import { setMaxListeners } from 'node:events'

export type RecordProtocolOptions = { -readonly [K in keyof typeof DEFAULTS]?: number }

/** Answer status bytes (the first byte of the answer frame). */
const NONE = 0
const RECORD = 1
/** Bytes of the created time in an answer: unsigned big-endian milliseconds since the epoch. */
const TIME_BYTES = 8

/** Where a layer's newest record is: its block's CID and when it was made. */
export interface RecordPointer {
  record: CID
  created: number
}

/** A peer's answer naming a record. */
export interface RecordAnswer extends RecordPointer {
  peer: PeerId
}

export interface RecordProtocolComponents {
  libp2p: Pick<Libp2p, 'handle' | 'unhandle' | 'dialProtocol' | 'getConnections' | 'peerStore'>
  /** The record this node would hand out for a layer (its block must be in the local blockstore). */
  lookup: (layer: CID) => Promise<RecordPointer | undefined>
  logger: Logger
}

export interface RecordProtocolStats {
  /** Asks made (one per layer), peers asked, and answers that named a record / said none. */
  asks: number
  peersAsked: number
  answers: number
  noneAnswers: number
  /** Peers that failed to answer: timeout, stream error, or a malformed answer (`badAnswers`). */
  failedAnswers: number
  badAnswers: number
  /** Requests answered with a record / with none; inbound streams closed as malformed or slow. */
  served: number
  servedNone: number
  rejectedRequests: number
}

/**
 * `/ipfs-estargz/prefetch-record/1.0.0`: which record does a peer have for a layer?
 *
 * One request per stream; frames are unsigned-varint length-prefixed (`lpStream`):
 *
 *   request = frame( layer-CID-bytes )                              exactly one CID, ≤ maxCidBytes
 *   answer  = frame( 0x00 )                                         none
 *           | frame( 0x01 record-CID-bytes created-ms:u64be )       a record (raw, sha2-256 CID)
 *
 * The answer is a pointer only: the record itself is a block fetched by its CID through the
 * node's fetch path (verified), then checked against the layer (src/prefetch-record/record.ts).
 * A peer whose answer is malformed, or whose record turns out bad (`markBad`), is not asked again.
 */
export class RecordProtocol {
  private readonly opts: Required<RecordProtocolOptions>
  private readonly log: Logger
  private readonly counts: RecordProtocolStats = { asks: 0, peersAsked: 0, answers: 0, noneAnswers: 0, failedAnswers: 0, badAnswers: 0, served: 0, servedNone: 0, rejectedRequests: 0 }
  private readonly bad = new Set<string>()
  private readonly streams = new Set<Stream>()
  private running = false

  constructor (private readonly components: RecordProtocolComponents, options: RecordProtocolOptions = {}) {
    this.opts = { ...DEFAULTS, ...options }
    for (const [k, v] of Object.entries(this.opts)) {
      if (!Number.isSafeInteger(v) || v < 1) throw new InvalidOptionError(`prefetch-record protocol: ${k} must be a positive integer, got ${String(v)}`)
    }
    this.log = components.logger.child({ component: 'prefetch-record' })
  }

  async start (): Promise<void> {
    if (this.running) return
    await this.components.libp2p.handle(PROTOCOL, async (stream, connection) => { await this.serve(stream, connection) }, {
      maxInboundStreams: this.opts.maxInboundStreams,
      maxOutboundStreams: this.opts.maxOutboundStreams
    })
    this.running = true
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    await this.components.libp2p.unhandle(PROTOCOL).catch(() => {})
    for (const s of [...this.streams]) s.abort(new AbortError('prefetch-record protocol stopped'))
    this.streams.clear()
  }

  stats (): RecordProtocolStats {
    return { ...this.counts }
  }

  /** A peer whose record was bad: it is not asked again (until the daemon restarts). */
  markBad (peer: PeerId): void {
    this.bad.add(peer.toString())
  }

  /**
   * Asks the connected peers (at most `maxPeers`, those announcing the protocol first) at once which record
   * it has for `layer`; resolves within `askTimeoutMs` with the answers that named one, newest
   * first. Never rejects but for the caller's abort: a peer that fails is just not in the list.
   */
  async ask (layer: CID, signal?: AbortSignal): Promise<RecordAnswer[]> {
    if (isAborted(signal)) throw new AbortError(`asking for the record of ${layer.toString()}: aborted`)
    if (!this.running) return []
    this.counts.asks++
    const peers = (await this.speakers()).slice(0, this.opts.maxPeers)
    const d = deadline(this.opts.askTimeoutMs, signal)
    setMaxListeners(Infinity, d.signal)
    const s = d.signal
    const answers = await Promise.all(peers.map(async (peer): Promise<RecordAnswer | undefined> => {
      this.counts.peersAsked++
      try {
        const pointer = await this.askOne(peer, layer, s)
        if (pointer == null) { this.counts.noneAnswers++; return undefined }
        this.counts.answers++
        return { peer, ...pointer }
      } catch (err) {
        this.counts.failedAnswers++
        if (err instanceof PrefetchRecordProtocolError) {
          this.counts.badAnswers++
          this.bad.add(peer.toString())
          this.log.warn({ peer: peer.toString(), layer: layer.toString(), err: err.message }, 'peer sent a malformed prefetch-record answer; not asking it again')
        } else {
          this.log.debug({ peer: peer.toString(), layer: layer.toString(), err: (err as Error).message }, 'peer did not answer for a prefetch record')
        }
        return undefined
      }
    })).finally(() => { d.clear() })
    if (isAborted(signal)) throw new AbortError(`asking for the record of ${layer.toString()}: aborted`)
    return answers.filter((a): a is RecordAnswer => a != null).sort((a, b) => b.created - a.created)
  }

  /**
   * Connected peers, minus the bad ones; those that announced the protocol first. The others are
   * asked too: a peer that registered the protocol after we identified it (a node dials its
   * static peers before it starts serving records) is not known to speak it. One that does not
   * costs a refused protocol negotiation.
   */
  private async speakers (): Promise<PeerId[]> {
    const { libp2p } = this.components
    const byId = new Map<string, PeerId>()
    for (const c of libp2p.getConnections()) if (c.status === 'open') byId.set(c.remotePeer.toString(), c.remotePeer)
    const known: PeerId[] = []
    const others: PeerId[] = []
    for (const [id, peer] of byId) {
      if (this.bad.has(id)) continue
      let speaks = false
      try {
        speaks = (await libp2p.peerStore.get(peer)).protocols.includes(PROTOCOL)
      } catch {} // not identified yet
      ;(speaks ? known : others).push(peer)
    }
    return [...known, ...others]
  }

  private async askOne (peer: PeerId, layer: CID, signal: AbortSignal): Promise<RecordPointer | undefined> {
    let stream: Stream | undefined
    try {
      stream = await this.components.libp2p.dialProtocol(peer, PROTOCOL, { signal })
      this.track(stream)
      const max = 1 + this.opts.maxCidBytes + TIME_BYTES
      const lp = lengthPrefixed(stream, { maxDataLength: max, maxBufferSize: 2 * max }, prefixTooLong)
      await lp.write(layer.bytes, { signal })
      const frame = await lp.read({ signal })
      const answer = decodeAnswer(frame.subarray(), this.opts.maxCidBytes)
      await stream.close({ signal }).catch(() => {})
      return answer
    } catch (err) {
      const e = signal.aborted && !(err instanceof PrefetchRecordProtocolError)
        ? new PrefetchRecordTimeoutError(`no prefetch-record answer from ${peer.toString()} within ${this.opts.askTimeoutMs} ms`)
        : asProtocolError(err)
      stream?.abort(e)
      throw e
    }
  }

  /** Server: one request, one answer, from the node's own records only. */
  private async serve (stream: Stream, connection: Connection): Promise<void> {
    const peer = connection.remotePeer.toString()
    this.track(stream)
    const signal = AbortSignal.timeout(this.opts.serveTimeoutMs)
    try {
      const lp = lengthPrefixed(stream, { maxDataLength: this.opts.maxCidBytes, maxBufferSize: 2 * this.opts.maxCidBytes }, prefixTooLong)
      const layer = decodeRequest((await lp.read({ signal })).subarray())
      const pointer = await this.components.lookup(layer)
      if (pointer == null) this.counts.servedNone++
      else this.counts.served++
      await lp.write(encodeAnswer(pointer), { signal })
      await stream.close({ signal })
    } catch (err) {
      const e = signal.aborted ? new PrefetchRecordTimeoutError(`${peer} sent no prefetch-record request (or took no answer) within ${this.opts.serveTimeoutMs} ms`) : asProtocolError(err)
      if (e instanceof PrefetchRecordProtocolError || e instanceof PrefetchRecordTimeoutError) {
        this.counts.rejectedRequests++
        this.log.warn({ peer, err: e.message }, 'prefetch-record: closing a bad inbound stream')
      } else {
        this.log.debug({ peer, err: e.message }, 'prefetch-record: inbound stream ended')
      }
      stream.abort(e)
    }
  }

  private track (stream: Stream): void {
    this.streams.add(stream)
    stream.addEventListener('close', () => { this.streams.delete(stream) }, { once: true })
  }
}

const isAborted = (signal?: AbortSignal): boolean => signal?.aborted === true

/** lpStream's framing errors (it-length-prefixed's, known by name), as ours: the peer broke the wire format. */
const FRAMING_ERRORS = new Set(['InvalidDataLengthError', 'InvalidDataLengthLengthError', 'InvalidMessageLengthError', 'StreamBufferError', 'UnexpectedEOFError'])

/** A frame's length prefix longer than the largest frame allowed needs: the peer broke the wire format. */
function prefixTooLong (bytes: number): Error {
  return new PrefetchRecordProtocolError(`a frame's length prefix runs past ${bytes} bytes`)
}

function asProtocolError (err: unknown): Error {
  const e = err as Error
  return FRAMING_ERRORS.has(e.name) ? new PrefetchRecordProtocolError(e.message) : e
}

/** One CID filling the whole body. */
function decodeCid (body: Uint8Array, what: string): [CID, Uint8Array] {
  try {
    return CID.decodeFirst(body)
  } catch (err) {
    throw new PrefetchRecordProtocolError(`malformed ${what} CID: ${(err as Error).message}`)
  }
}

export function decodeRequest (body: Uint8Array): CID {
  const [cid, rest] = decodeCid(body, 'layer')
  if (rest.length !== 0) throw new PrefetchRecordProtocolError(`${rest.length} bytes after the layer CID in a request`)
  return cid
}

export function encodeAnswer (pointer: RecordPointer | undefined): Uint8Array {
  if (pointer == null) return Uint8Array.of(NONE)
  const time = Buffer.alloc(TIME_BYTES)
  time.writeBigUInt64BE(BigInt(pointer.created))
  return Buffer.concat([Uint8Array.of(RECORD), pointer.record.bytes, time])
}

export function decodeAnswer (body: Uint8Array, maxCidBytes: number = DEFAULTS.maxCidBytes): RecordPointer | undefined {
  if (body.length === 1 && body[0] === NONE) return undefined
  if (body.length === 0 || body[0] !== RECORD) throw new PrefetchRecordProtocolError(`answer status ${body.length === 0 ? 'missing' : body[0]}, or trailing bytes after none`)
  const [record, rest] = decodeCid(body.subarray(1), 'record')
  if (body.length - 1 - rest.length > maxCidBytes) throw new PrefetchRecordProtocolError(`record CID longer than ${maxCidBytes} bytes`)
  if (!isRecordCid(record)) throw new PrefetchRecordProtocolError(`record CID ${record.toString()} is not a raw sha2-256 CIDv1`)
  if (rest.length !== TIME_BYTES) throw new PrefetchRecordProtocolError(`answer has ${rest.length} bytes after the record CID, expected ${TIME_BYTES}`)
  const created = Buffer.from(rest.buffer, rest.byteOffset, rest.byteLength).readBigUInt64BE()
  if (created > BigInt(Number.MAX_SAFE_INTEGER)) throw new PrefetchRecordProtocolError(`created time ${created} out of range`)
  return { record, created: Number(created) }
}
