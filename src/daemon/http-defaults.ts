/**
 * The daemon's HTTP listener (/metrics, /healthz): its defaults, in one place. Kept apart from
 * the server so the configuration (loaded by the FUSE manager too) reads them without loading
 * prom-client.
 */
export const HTTP_DEFAULTS = {
  /** HOST:PORT; loopback unless `public`. Empty: no listener. */
  address: '127.0.0.1:5381',
  /** Listening on a non-loopback address needs this set (the metrics name layers, peers and mounts). */
  public: false,
  /** ms to receive a request's headers, and the whole request. */
  headersTimeoutMs: 5_000,
  requestTimeoutMs: 10_000,
  /** ms a connection may carry no traffic. */
  idleTimeoutMs: 30_000,
  /** ms an idle keep-alive connection is kept (a scraper comes back every 15 s or so). */
  keepAliveTimeoutMs: 5_000,
  /** How often (ms) Node checks the headers and request timeouts. */
  timeoutCheckIntervalMs: 1_000,
  /** Bytes of request line and headers, and their count. */
  maxHeaderBytes: 8 * 1024,
  maxHeadersCount: 32,
  /** Requests one keep-alive connection may carry. */
  maxRequestsPerSocket: 1_000,
  /** Open connections; more are closed on accept. */
  maxConnections: 32,
  /** Requests answered at once; more are refused with 429 at once (a scrape asks the FUSE manager). */
  maxInFlight: 4,
  /**
   * ms a scrape or health check waits for the FUSE manager's counters: past it /metrics answers
   * without them (and says so in `ipfs_estargz_fuse_manager_up`), /healthz answers 503.
   */
  collectTimeoutMs: 3_000
} as const
