import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Logger } from '../logging.js'
import { isLoopback, parseAddress } from '../mirror/index.js'
import { HttpListenerError } from './errors.js'
import { HTTP_DEFAULTS } from './http-defaults.js'
import { DaemonMetrics, type DaemonSnapshot } from './metrics.js'

export { HTTP_DEFAULTS }

export type HttpOptions = { -readonly [K in keyof typeof HTTP_DEFAULTS]: (typeof HTTP_DEFAULTS)[K] extends boolean ? boolean : (typeof HTTP_DEFAULTS)[K] extends string ? string : number }

/** What /healthz says: healthy, or why not. */
export type Health = { ok: true } | { ok: false, why: string }

export interface HttpComponents {
  logger: Logger
  /** The counters of a scrape; `signal` fires after `collectTimeoutMs`. */
  snapshot: (signal: AbortSignal) => Promise<DaemonSnapshot>
  /** Whether the daemon serves: `signal` fires after `collectTimeoutMs`. */
  health: (signal: AbortSignal) => Promise<Health>
}

/** Rejects with the signal's reason when it fires first: nothing a request waits for holds it longer. */
export async function bounded<T> (p: Promise<T>, signal: AbortSignal): Promise<T> {
  signal.throwIfAborted()
  let onAbort!: () => void
  const aborted = new Promise<never>((_resolve, reject) => { onAbort = () => reject(signal.reason) })
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    return await Promise.race([p, aborted])
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}

/**
 * The daemon's HTTP listener for monitoring: `GET /metrics` (Prometheus text) and `GET /healthz`
 * (200 `ok`, or 503 with the reason). Loopback by default, another address only with `public`;
 * GET only; every time and size bounded by our own values (HTTP_DEFAULTS), requests beyond
 * `maxInFlight` refused at once, and a scrape waits for the FUSE manager at most `collectTimeoutMs`.
 */
export class HttpListener {
  private server?: Server
  private inFlight = 0
  private readonly metrics = new DaemonMetrics()
  private readonly log: Logger
  private readonly opts: HttpOptions

  constructor (private readonly components: HttpComponents, options: Partial<HttpOptions> = {}) {
    this.opts = { ...HTTP_DEFAULTS, ...options }
    this.log = components.logger.child({ component: 'http' })
    const { host } = this.address()
    if (!isLoopback(host) && !this.opts.public) throw new HttpListenerError(`[http] address ${this.opts.address} is not loopback: set [http] public = true to serve other hosts`)
  }

  /** `http://host:port` once listening. */
  get url (): string {
    const a = this.server?.address()
    if (a == null || typeof a === 'string') throw new HttpListenerError('the HTTP listener is not listening')
    return `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`
  }

  async start (): Promise<void> {
    const o = this.opts
    const server = createServer({
      maxHeaderSize: o.maxHeaderBytes,
      requestTimeout: o.requestTimeoutMs,
      headersTimeout: o.headersTimeoutMs,
      keepAliveTimeout: o.keepAliveTimeoutMs,
      connectionsCheckingInterval: o.timeoutCheckIntervalMs
    }, (req, res) => { void this.serve(req, res) })
    server.timeout = o.idleTimeoutMs
    server.maxHeadersCount = o.maxHeadersCount
    server.maxRequestsPerSocket = o.maxRequestsPerSocket
    server.maxConnections = o.maxConnections
    server.on('clientError', (err, socket) => { this.log.debug({ err: err.message }, 'bad request'); socket.destroy() })
    const { host, port } = this.address()
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => { reject(new HttpListenerError(`[http] cannot listen on ${o.address}: ${err.message}`, { cause: err })) })
      server.listen(port, host, () => { server.removeAllListeners('error'); resolve() })
    })
    server.on('error', (err) => { this.log.error({ err: err.message }, 'HTTP listener failed') })
    this.server = server
    this.log.info({ url: this.url }, 'HTTP listener (/metrics, /healthz) listening')
  }

  async stop (): Promise<void> {
    const s = this.server
    if (s == null) return
    this.server = undefined
    const closed = new Promise<void>(resolve => { s.close(() => { resolve() }) })
    s.closeAllConnections()
    await closed
  }

  private address (): { host: string, port: number } {
    try {
      return parseAddress(this.opts.address)
    } catch {
      throw new HttpListenerError(`[http] address ${JSON.stringify(this.opts.address)} is not HOST:PORT`)
    }
  }

  private async serve (req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'GET') {
      this.answer(res, 405, 'GET only\n', { Allow: 'GET' })
      return
    }
    const path = new URL(req.url ?? '/', 'http://listener.invalid').pathname
    if (path !== '/metrics' && path !== '/healthz') {
      this.answer(res, 404, 'not found: this listener serves /metrics and /healthz\n')
      return
    }
    if (this.inFlight >= this.opts.maxInFlight) {
      this.answer(res, 429, 'too many requests at once\n', { 'Retry-After': '1' })
      return
    }
    this.inFlight++
    try {
      const signal = AbortSignal.timeout(this.opts.collectTimeoutMs)
      if (path === '/healthz') {
        const h = await bounded(this.components.health(signal), signal).catch((err: Error): Health => ({ ok: false, why: err.message }))
        this.answer(res, h.ok ? 200 : 503, h.ok ? 'ok\n' : `unhealthy: ${h.why}\n`)
      } else {
        const { text, contentType } = await this.metrics.render(await bounded(this.components.snapshot(signal), signal))
        this.answer(res, 200, text, { 'Content-Type': contentType })
      }
    } catch (err) {
      this.log.warn({ path, err: (err as Error).message }, 'monitoring request failed')
      this.answer(res, 500, `${(err as Error).message}\n`)
    } finally {
      this.inFlight--
    }
  }

  private answer (res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
    if (res.destroyed) return
    res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', ...headers, 'Content-Length': String(Buffer.byteLength(body)), 'Cache-Control': 'no-store' })
    res.end(body)
  }
}
