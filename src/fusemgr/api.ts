import { Agent, request } from 'node:http'
import type { ChunkCacheStats } from '../fs/index.js'
import { FuseManagerCancelledError, FuseManagerError, FuseManagerTimeoutError, FuseManagerUnavailableError } from './errors.js'

/**
 * The FUSE manager's API: HTTP/1.1 with JSON bodies over a unix socket (root only, 0600), so
 * `curl --unix-socket` can inspect it. The daemon is its only client.
 *
 *   GET  /v1/health              → Health
 *   POST /v1/attach   Attach     → the daemon whose blob API serves the layers' bytes
 *   POST /v1/warm     WarmRequest  → WarmReply: opens a layer (footer + TOC) for a mount to come
 *   POST /v1/mount    MountRequest → MountReply (idempotent: a live mount of the same CID is kept;
 *                     cancelled when the caller hangs up: nothing stays mounted)
 *   POST /v1/unmount  { mountpoint } (also cancels a mount in progress there, and answers once it is gone)
 *   POST /v1/check    { mountpoint } → 200 when mounted and answering
 *   GET  /v1/mounts              → MountInfo[]
 *   POST /v1/shutdown            → unmounts everything and exits
 */
export const ROUTES = {
  health: '/v1/health',
  attach: '/v1/attach',
  warm: '/v1/warm',
  mount: '/v1/mount',
  unmount: '/v1/unmount',
  check: '/v1/check',
  mounts: '/v1/mounts',
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
}

export interface Attach {
  /** The daemon's control socket, which serves `GET /v1/blobs/<cid>`. */
  blobSocket: string
}

/** Per-mount settings the daemon takes from its configuration. */
export interface MountSettings {
  prefetchTimeoutMs?: number
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
  /** The settings the mount will carry (an opened layer is only used by a mount with equal settings). */
  settings?: MountSettings
}

export interface WarmReply {
  /** false: it was already open or being opened (by an earlier warm call). */
  opened: boolean
  tocDigest: string
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
}

/** Error body of every non-2xx answer. */
export interface ErrorBody {
  error: string
  code: string
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
 * listens, and FuseManagerTimeoutError when no answer came in time. Every call is bounded by our
 * own timeout or the caller's signal, never by a socket timeout of Node's (its global agent cuts
 * a socket after 5 s): requests go through an agent of this client that sets none.
 */
export class FuseManagerClient {
  private readonly agent = new Agent({ keepAlive: false })

  constructor (readonly socket: string, private readonly options: FuseManagerClientOptions = {}) {}

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

  async shutdown (): Promise<void> {
    await this.call('POST', ROUTES.shutdown, {})
  }

  private get mountTimeoutMs (): number {
    return this.options.mountTimeoutMs ?? DEFAULTS.mountTimeoutMs
  }

  /** `timeoutMs` 0: only `signal` bounds the call. */
  private async call<T = unknown> (method: 'GET' | 'POST', path: string, body?: unknown, signal?: AbortSignal, timeoutMs = this.options.callTimeoutMs ?? DEFAULTS.callTimeoutMs): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body))
    const cancelled = (): FuseManagerCancelledError => {
      const reason = signal?.reason as Error | undefined
      return new FuseManagerCancelledError(`${method} ${path}: cancelled by the caller${reason?.message != null ? ` (${reason.message})` : ''}`)
    }
    if (signal?.aborted === true) throw cancelled()
    return await new Promise<T>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined
      const onAbort = (): void => { req.destroy(cancelled()) }
      const settle = (fn: () => void): void => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        fn()
      }
      const req = request({
        socketPath: this.socket,
        agent: this.agent,
        path,
        method,
        headers: payload != null ? { 'content-type': 'application/json', 'content-length': payload.length } : {}
      }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('error', (err) => settle(() => reject(err)))
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8')
          let parsed: unknown
          try {
            parsed = text === '' ? undefined : JSON.parse(text)
          } catch {
            settle(() => reject(new FuseManagerError(`${method} ${path}: the FUSE manager answered HTTP ${String(res.statusCode)} with a body that is not JSON`, { status: res.statusCode })))
            return
          }
          if (res.statusCode != null && res.statusCode >= 200 && res.statusCode < 300) {
            settle(() => resolve(parsed as T))
            return
          }
          const e = parsed as Partial<ErrorBody> | undefined
          settle(() => reject(new FuseManagerError(e?.error ?? `${method} ${path}: HTTP ${String(res.statusCode)}`, { remoteCode: e?.code, status: res.statusCode })))
        })
      })
      if (timeoutMs > 0) timer = setTimeout(() => req.destroy(new FuseManagerTimeoutError(`${method} ${path}: no answer from the FUSE manager within ${timeoutMs} ms`)), timeoutMs)
      signal?.addEventListener('abort', onAbort, { once: true })
      req.on('error', (err: NodeJS.ErrnoException) => {
        settle(() => {
          // Node's errno: no socket there, or nothing listens on it
          if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') reject(new FuseManagerUnavailableError(this.socket))
          else reject(err)
        })
      })
      req.end(payload)
    })
  }
}
