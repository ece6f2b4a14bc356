/**
 * Kept apart from the server so the daemon's configuration (loaded by the FUSE manager too)
 * can read them without loading the IPFS code.
 */
/** The mirror listener's defaults, in one place (docs/configuration.md, `[mirror]`). */
export const DEFAULTS = {
  /** host:port. Loopback unless `public`. */
  address: '127.0.0.1:5380',
  /** Listening on a non-loopback address needs this set. */
  public: false,
  /** PEM certificate and key files: both set, the listener speaks HTTPS only. */
  tlsCert: '',
  tlsKey: '',
  /** File of `USER:$scrypt$SALT$KEY` lines: set, every request needs HTTP basic auth. */
  credentials: '',
  /** Requests answered at once; more are refused with 429 at once. */
  maxStreams: 64,
  /** Open connections; more are closed on accept. */
  maxConnections: 256,
  /** ms to receive a request's headers. */
  headersTimeoutMs: 10_000,
  /** ms to receive a whole request (headers and any body). */
  requestTimeoutMs: 30_000,
  /** ms a connection may see no traffic either way (a stalled reader of a blob is cut then). */
  idleTimeoutMs: 60_000,
  /** ms an idle keep-alive connection is kept. */
  keepAliveTimeoutMs: 5_000,
  /** How often (ms) Node checks the headers and request timeouts. */
  timeoutCheckIntervalMs: 1_000,
  /** Bytes of request line and headers, and their count. */
  maxHeaderBytes: 16 * 1024,
  maxHeadersCount: 64,
  /** Requests one keep-alive connection may carry. */
  maxRequestsPerSocket: 1_000,
  /** ms one block may take through the fetch path (local, peers, gateways) for the registry API. */
  blockTimeoutMs: 30_000,
  /** ms to open an image (its index, manifests, configs) for the registry API. */
  openTimeoutMs: 60_000,
  /** Images kept open for the registry API. */
  openImages: 64,
  /**
   * Leaves fetched at once through the fetch path while a blob streams, for leaves not in the
   * local store (from peers or gateways): one at a time, the per-block round trip sets the pace.
   */
  streamConcurrency: 64,
  /**
   * Leaves, and bytes of them, read from the local store at once while a blob streams: a layer
   * of small gzip members is thousands of small leaves, and read one by one their per-block cost
   * (a read on the threadpool, a promise, a hash object), not their bytes, sets the pace. The
   * pack store reads a run of them with one `pread`. A batch is also one write to the client.
   */
  streamBatchLeaves: 1024,
  streamBatchBytes: 1 << 20,
  /**
   * Bytes of batches read ahead while one is sent: a stream holds at most this plus one batch
   * and one write, so memory is bounded by `maxStreams`.
   */
  streamAheadBytes: 4 << 20,
  /**
   * Decoded file nodes (a blob's root and interior nodes) kept across requests: a range request
   * needs the root and the node above its leaves again. Decoded, a node of 1024 links takes
   * ~0.5 MB of heap (its block ~47 KB), so this caps them near 17 MB; a miss reads the block
   * from the local store again.
   */
  cachedNodes: 32,
  /**
   * Blob digests remembered as matching the file under their CID (hashed whole once, on the
   * first full read; the file under a CID never changes and every leaf is still checked
   * against its CID when the store first reads it).
   */
  matchedBlobs: 1024,
  /**
   * Runs of pack files kept, over all blobs (~100 bytes each; a layer pushed here is a few
   * runs): a blob read whole once (every leaf verified) is then sent as runs of those files, a
   * large read and write at a time, instead of a lookup, a check and a copy per leaf.
   */
  cachedExtents: 1 << 16,
  /**
   * A blob whose runs average fewer bytes than this (leaves stored out of order, as a lazy pull
   * fetches them) is sent block by block: a read per small run is slower than batched reads.
   */
  minExtentBytes: 64 << 10,
  /** Bytes of one read and one write when a blob is sent from its extents. */
  extentBytes: 1 << 20,
  /** Buffers of `extent_bytes` kept for reuse across answers (each answer has two or three at a time). */
  extentBuffers: 16,
  /** ms to look up a blob's extents after it was read whole (in the background; past it, the next read whole tries again). */
  extentLookupTimeoutMs: 10_000,
  /** A manifest or index larger than this is not served. */
  maxManifestBytes: 4 << 20
} as const
