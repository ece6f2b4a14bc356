/**
 * Learned prefetch's defaults, in a file that loads no libp2p: the daemon's configuration (which
 * the FUSE manager loads too) takes them from here.
 */
export { DEFAULTS as RECORD_DEFAULTS } from './record.js'
export { DEFAULTS as RECORDER_DEFAULTS } from './recorder.js'
export { DEFAULTS as PREFETCH_DEFAULTS } from './prefetch.js'

/** The protocol id announced through identify. */
export const PROTOCOL = '/ipfs-estargz/prefetch-record/1.0.0'

/** Prefetch-record protocol defaults, in one place. */
export const PROTOCOL_DEFAULTS = {
  /**
   * Client: how long one ask (every peer at once) may take. Short: a mount does not wait for it,
   * but the sooner the prefetch starts, the more of a container's first reads it is ahead of.
   */
  askTimeoutMs: 300,
  /** Client: peers asked at once at most (those that announced the protocol first). */
  maxPeers: 16,
  /** Server: the request must come, and the answer be taken, within this long. */
  serveTimeoutMs: 2_000,
  /** Largest CID on the wire: a sha2-256 CIDv1 is 36 bytes; this leaves room for others. */
  maxCidBytes: 128,
  /** Concurrent inbound / outbound streams of this protocol per connection. */
  maxInboundStreams: 8,
  maxOutboundStreams: 8
} as const
