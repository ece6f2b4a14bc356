import { request } from 'node:http'
import type { ChunkCacheStats } from '../fs/cache.js'
import { FuseManagerError, FuseManagerUnavailableError } from './errors.js'

/**
 * The FUSE manager's API: HTTP/1.1 with JSON bodies over a unix socket (root only, 0600), so
 * `curl --unix-socket` can inspect it. The daemon is its only client.
 *
 *   GET  /v1/health              → Health
 *   POST /v1/attach   Attach     → the daemon whose blob API serves the layers' bytes
 *   POST /v1/mount    MountRequest → MountReply (idempotent: a live mount of the same CID is kept)
 *   POST /v1/unmount  { mountpoint }
 *   POST /v1/check    { mountpoint } → 200 when mounted and answering
 *   GET  /v1/mounts              → MountInfo[]
 *   POST /v1/shutdown            → unmounts everything and exits
 */
export const ROUTES = {
  health: '/v1/health',
  attach: '/v1/attach',
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

export interface FuseManagerClientOptions {
  /** Per-call timeout in ms (mounts wait for prefetch, so they get the caller's signal instead). */
  timeoutMs?: number
}

/** The daemon's side of the API. Every method throws FuseManagerUnavailableError when nothing listens. */
export class FuseManagerClient {
  constructor (readonly socket: string, private readonly options: FuseManagerClientOptions = {}) {}

  async health (signal?: AbortSignal): Promise<Health> {
    return await this.call<Health>('GET', ROUTES.health, undefined, signal)
  }

  async attach (body: Attach): Promise<void> {
    await this.call('POST', ROUTES.attach, body)
  }

  async mount (body: MountRequest, signal?: AbortSignal): Promise<MountReply> {
    return await this.call<MountReply>('POST', ROUTES.mount, body, signal, 0)
  }

  async unmount (mountpoint: string): Promise<void> {
    await this.call('POST', ROUTES.unmount, { mountpoint })
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

  private async call<T = unknown> (method: 'GET' | 'POST', path: string, body?: unknown, signal?: AbortSignal, timeoutMs = this.options.timeoutMs ?? 30_000): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body))
    return await new Promise<T>((resolve, reject) => {
      const req = request({
        socketPath: this.socket,
        path,
        method,
        headers: payload != null ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
        ...(timeoutMs > 0 ? { timeout: timeoutMs } : {}),
        signal
      }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('error', reject)
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8')
          let parsed: unknown
          try {
            parsed = text === '' ? undefined : JSON.parse(text)
          } catch {
            reject(new FuseManagerError(`${method} ${path}: the FUSE manager answered HTTP ${String(res.statusCode)} with a body that is not JSON`))
            return
          }
          if (res.statusCode != null && res.statusCode >= 200 && res.statusCode < 300) {
            resolve(parsed as T)
            return
          }
          const e = parsed as Partial<ErrorBody> | undefined
          reject(new FuseManagerError(e?.error ?? `${method} ${path}: HTTP ${String(res.statusCode)}`, e?.code))
        })
      })
      req.on('timeout', () => req.destroy(new FuseManagerError(`${method} ${path}: no answer from the FUSE manager within ${timeoutMs} ms`)))
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') reject(new FuseManagerUnavailableError(this.socket))
        else reject(err)
      })
      req.end(payload)
    })
  }
}
