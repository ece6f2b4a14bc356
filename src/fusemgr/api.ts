import type { ChunkCacheStats, LayerFsStats } from '../fs/index.js'
import type { TocHint } from '../wire/index.js'
import { UnixHttpClient } from '../unix-http.js'
import { FuseManagerCancelledError, FuseManagerError, FuseManagerTimeoutError, FuseManagerUnavailableError } from './errors.js'

/**
 * The FUSE manager's API: HTTP/1.1 with JSON bodies over a unix socket (root only, 0600), so
 * `curl --unix-socket` can inspect it (src/unix-http.ts). The daemon is its only client. Every
 * error answer is `{ error, code }`.
 *
 *   GET  /v1/health              → Health
 *   POST /v1/attach   Attach     → the daemon whose blob API serves the layers' bytes
 *   POST /v1/warm     WarmRequest  → WarmReply: opens a layer (footer + TOC) for a mount to come
 *   POST /v1/mount    MountRequest → MountReply (idempotent: a live mount of the same CID is kept;
 *                     cancelled when the caller hangs up: nothing stays mounted)
 *   POST /v1/prefetch PrefetchRequest → PrefetchReply: caches a layer's ranges in the order given
 *                     (now if the layer is open, else when it opens soon); answers at once
 *   POST /v1/unmount  { mountpoint } (also cancels a mount in progress there, and answers once it is gone)
 *   POST /v1/check    { mountpoint } → 200 when mounted, answering, and its prioritized files are
 *                     cached (or their wait passed `prefetchTimeoutMs`)
 *   GET  /v1/mounts              → MountInfo[]
 *   POST /v1/gc       GcRequest  → GcReply: removes cached chunks no open layer references
 *   POST /v1/shutdown            → unmounts everything and exits
 */
export const ROUTES = {
  health: '/v1/health',
  attach: '/v1/attach',
  warm: '/v1/warm',
  prefetch: '/v1/prefetch',
  mount: '/v1/mount',
  unmount: '/v1/unmount',
  check: '/v1/check',
  mounts: '/v1/mounts',
  gc: '/v1/gc',
  shutdown: '/v1/shutdown'
} as const

export interface Health {
  ok: true
  pid: number
  /** The blob socket the manager reads layers through, once a daemon attached. */
  blobSocket?: string
  mounts: number
  /** The chunk cache shared by the mounts. */
  cache?: ChunkCacheStats
  warm?: WarmStats
  prefetch?: RangePrefetchStats
  /** Layer opens given a TOC hint, and those whose hint did not hold (the footer was read instead). */
  tocHints?: { given: number, refused: number }
  /** The `sh` child every unmount runs in (src/fs/unmount-helper.ts): its pid while it runs, detaches done and failed. */
  unmountHelper?: { pid?: number, detached: number, failed: number }
}

export interface Attach {
  /** The daemon's control socket, which serves `GET /v1/blobs/<cid>`. */
  blobSocket: string
}

/** Per-mount settings the daemon takes from its configuration. */
export interface MountSettings {
  prefetchTimeoutMs?: number
  /** The mount waits for the prioritized files; otherwise `check` does. */
  waitForPrefetchAtMount?: boolean
  backgroundFetch?: boolean
  fetchTimeoutMs?: number
  readWindowBytes?: number
  neighbourBytes?: number
  allowNoVerification?: boolean
  /** Readahead window of the layer's source (0: off). */
  readaheadBytes?: number
}

export interface MountRequest {
  mountpoint: string
  cid: string
  tocDigest?: string
  /** Where the layer's TOC member is (its annotations' hint): the open skips the footer. */
  toc?: TocHint
  settings?: MountSettings
}

export interface MountReply {
  /** false: the layer was already mounted there by this manager and kept as it was. */
  mounted: boolean
  tocDigest: string
  /** The layer was opened ahead by a warm call (its footer and TOC were ready). */
  warm?: boolean
  /** Milliseconds per step of a new mount: TOC (0 when warm), prefetch + FUSE mount, in all. */
  timings?: { tocMs: number, mountMs: number, totalMs: number }
}

/** A layer a mount will soon ask for: its footer and TOC are read and verified now. */
export interface WarmRequest {
  cid: string
  tocDigest: string
  /**
   * The blob's size from its descriptor, sparing the open a size request. A wrong one only fails
   * the open (the footer is not where it says; the TOC digest is checked either way).
   */
  size?: number
  /** Where the layer's TOC member is (its annotations' hint): the open skips the footer. */
  toc?: TocHint
  /** The settings the mount will carry (an opened layer is only used by a mount with equal settings). */
  settings?: MountSettings
}

export interface WarmReply {
  /** false: it was already open or being opened (by an earlier warm call). */
  opened: boolean
  tocDigest: string
}

/** Ranges of a layer to cache in this order: a prefetch record's (compressed blob offsets and lengths). */
export interface PrefetchRequest {
  cid: string
  ranges: Array<[number, number]>
}

export interface PrefetchReply {
  /** `started`: the layer is open and its ranges are being cached; `waiting`: they will be when it opens. */
  state: 'started' | 'waiting'
}

/** Counters of `POST /v1/prefetch`, in Health. */
export interface RangePrefetchStats {
  requests: number
  /** Prefetches started on an open layer, and finished (whole or stopped early). */
  started: number
  finished: number
  /** Chunks and compressed bytes the finished ones covered. */
  chunks: number
  bytes: number
  /** Finished early: a fetch failed or the layer stopped. */
  failed: number
  /** Requests for a layer that did not open in time (dropped). */
  expired: number
  /** Requests waiting for their layer to open. */
  waiting?: number
}

/** The warm cache's counters, in Health. */
export interface WarmStats {
  /** Layers open and waiting for their mount. */
  ready: number
  /** Mounts that found their layer opened ahead. */
  hits: number
  /** New mounts that had to read the footer and TOC themselves. */
  misses: number
  /** Opened layers dropped unused (TTL or cache full). */
  expired: number
}

export interface MountInfo {
  mountpoint: string
  cid: string
  tocDigest: string
  /** Compressed bytes fetched for this layer so far. */
  bytesFetched: number
  /** The layer's counters: bytes by priority, cache hits, verification failures, fetch latencies, prefetch progress. */
  stats?: LayerFsStats
}

export interface GcRequest {
  /** Count, remove nothing. */
  dryRun?: boolean
}

export interface GcReply {
  /** Chunk files removed (or removable) and their bytes. */
  entries: number
  bytes: number
  /** Chunk files kept: a mounted or opened layer's TOC names them. */
  keptEntries: number
  keptBytes: number
}

/** Client defaults, in one place. */
export const DEFAULTS = {
  /**
   * Every call but mount and warm. The manager answers them from memory, or (unmount) once a
   * mount in progress at that mountpoint is cancelled: up to its prefetch timeout plus an unmount.
   */
  callTimeoutMs: 30_000,
  /** A mount or warm whose caller passes no signal (the snapshotter passes its mount timeout). */
  mountTimeoutMs: 60_000
} as const

export interface FuseManagerClientOptions {
  callTimeoutMs?: number
  mountTimeoutMs?: number
}

/**
 * The daemon's side of the API. Every method throws FuseManagerUnavailableError when nothing
 * listens, FuseManagerTimeoutError when no answer came in time, and a FuseManagerError with the
 * manager's code (`remoteCode`) and status when it answered an error. Every call is bounded by
 * our own timeout or the caller's signal, never by a socket timeout of Node's.
 */
export class FuseManagerClient {
  private readonly http: UnixHttpClient

  constructor (readonly socket: string, private readonly options: FuseManagerClientOptions = {}) {
    this.http = new UnixHttpClient(socket, {
      agent: { keepAlive: false },
      callTimeoutMs: options.callTimeoutMs ?? DEFAULTS.callTimeoutMs,
      errors: {
        answered: (_call, answer) => new FuseManagerError(answer.message, { remoteCode: answer.remoteCode, status: answer.status }),
        timeout: (call) => new FuseManagerTimeoutError(`${call.method} ${call.path}: no answer from the FUSE manager within ${call.timeoutMs} ms`),
        cancelled: (call, reason) => new FuseManagerCancelledError(`${call.method} ${call.path}: cancelled by the caller${(reason as Error | undefined)?.message != null ? ` (${(reason as Error).message})` : ''}`),
        // Node's errno: no socket there, or nothing listens on it
        connection: (_call, err) => err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? new FuseManagerUnavailableError(socket, { cause: err }) : err
      }
    })
  }

  async health (signal?: AbortSignal): Promise<Health> {
    return await this.call<Health>('GET', ROUTES.health, undefined, signal)
  }

  async attach (body: Attach): Promise<void> {
    await this.call('POST', ROUTES.attach, body)
  }

  /** Bounded by `signal` alone when given (no timeout of ours cuts a mount shorter), else by `mountTimeoutMs`. */
  async mount (body: MountRequest, signal?: AbortSignal): Promise<MountReply> {
    return await this.call<MountReply>('POST', ROUTES.mount, body, signal, signal != null ? 0 : this.mountTimeoutMs)
  }

  /** Opens a layer ahead of its mount; bounded as `mount`. */
  async warm (body: WarmRequest, signal?: AbortSignal): Promise<WarmReply> {
    return await this.call<WarmReply>('POST', ROUTES.warm, body, signal, signal != null ? 0 : this.mountTimeoutMs)
  }

  /** Hands a layer's recorded ranges to the manager; answers at once (the caching goes on there). */
  async prefetch (body: PrefetchRequest, signal?: AbortSignal): Promise<PrefetchReply> {
    return await this.call<PrefetchReply>('POST', ROUTES.prefetch, body, signal)
  }

  /** Unmounts, or cancels a mount in progress there; resolves once nothing is (or will be) mounted there. */
  async unmount (mountpoint: string, signal?: AbortSignal): Promise<void> {
    await this.call('POST', ROUTES.unmount, { mountpoint }, signal)
  }

  async check (mountpoint: string): Promise<void> {
    await this.call('POST', ROUTES.check, { mountpoint })
  }

  async mounts (): Promise<MountInfo[]> {
    return await this.call<MountInfo[]>('GET', ROUTES.mounts)
  }

  /** Removes the cached chunks no open layer references (`dryRun`: counts them). */
  async gc (body: GcRequest, signal?: AbortSignal): Promise<GcReply> {
    return await this.call<GcReply>('POST', ROUTES.gc, body, signal)
  }

  async shutdown (): Promise<void> {
    await this.call('POST', ROUTES.shutdown, {})
  }

  private get mountTimeoutMs (): number {
    return this.options.mountTimeoutMs ?? DEFAULTS.mountTimeoutMs
  }

  /** `timeoutMs` 0: only `signal` bounds the call; default: the client's call timeout. */
  private async call<T = unknown> (method: 'GET' | 'POST', path: string, body?: unknown, signal?: AbortSignal, timeoutMs?: number): Promise<T> {
    return await this.http.json<T>(method, path, { body, signal, timeoutMs })
  }
}
