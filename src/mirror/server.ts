import { readFile } from 'node:fs/promises'
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { isIP } from 'node:net'
import type { CID } from 'multiformats/cid'
import { collectBlock, verifyBlock, type BlockFetchPath } from '../ipfs/index.js'
import type { Logger } from '../logging.js'
import { BasicAuth } from './auth.js'
import { DistributionError, GatewayRequestError, MirrorOptionError } from './errors.js'
import { GatewayApi } from './gateway-api.js'
import { clientGone } from './http.js'
import { ImageViews, type MirrorIndex } from './images.js'
import { DEFAULTS } from './defaults.js'
import { RegistryApi, errorBody } from './registry-api.js'
import type { SpanStore } from './blob-extents.js'
import { deadline } from '../signals.js'

export type MirrorOptions = { -readonly [K in keyof typeof DEFAULTS]: (typeof DEFAULTS)[K] extends number ? number : (typeof DEFAULTS)[K] extends boolean ? boolean : string }

export interface MirrorComponents {
  logger: Logger
  /** The node's fetch path (the registry API reads images through it). */
  blocks: BlockFetchPath
  /** The local blockstore (the gateway serves only from it). */
  localBlockstore: {
    has: (cid: CID) => Promise<boolean>
    get: (cid: CID, options?: { signal?: AbortSignal }) => AsyncIterable<Uint8Array> | Iterable<Uint8Array>
    /** Many blocks at once, each checked against its CID, undefined where absent (the pack store has it). */
    readMany?: (cids: CID[], options?: { signal?: AbortSignal, maxBytes?: number }) => Promise<Array<Uint8Array | undefined>>
    /** Where verified blocks lie in the store's files, and reading them back (the pack store has them). */
    verifiedSpans?: SpanStore['verifiedSpans']
    readVerified?: SpanStore['readVerified']
  }
  index: MirrorIndex
}

/** The local store's span reads, when it has them (the pack store). */
function spansOf (store: MirrorComponents['localBlockstore']): SpanStore | undefined {
  const { verifiedSpans, readVerified } = store
  if (verifiedSpans == null || readVerified == null) return undefined
  return { verifiedSpans: cids => verifiedSpans.call(store, cids), readVerified: async (span, buf) => await readVerified.call(store, span, buf) }
}

/** `host:port` → its parts; `[v6]:port` too. */
export function parseAddress (address: string): { host: string, port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(address)
  const port = Number(m?.[3])
  if (m == null || !Number.isInteger(port) || port > 65535) throw new MirrorOptionError(`[mirror] address ${JSON.stringify(address)} is not HOST:PORT`)
  return { host: m[1] ?? m[2], port }
}

export function isLoopback (host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'))
}

/** A mirror's counters since it started (`MirrorServer.stats`). */
export type MirrorStats = { requests: number, refused: number } & RegistryApi['counts']

/**
 * The mirror's HTTP listener: the OCI Distribution read API (`/v2/…`) over the images of the
 * repo, and a trustless gateway (`/ipfs/<cid>`) over its blocks. Loopback by default; another
 * address only with `public`, optionally with TLS and basic auth. Every time and size is
 * bounded (DEFAULTS), requests beyond `maxStreams` are refused at once, and all work is
 * asynchronous: block reads, hashing in pieces, scrypt on the threadpool.
 */
export class MirrorServer {
  private server?: Server
  private auth?: BasicAuth
  private active = 0
  private requests = 0
  private refused = 0
  private readonly opts: MirrorOptions
  private readonly log: Logger
  private readonly registry: RegistryApi
  private readonly gateway: GatewayApi

  constructor (components: MirrorComponents, options: Partial<MirrorOptions> = {}) {
    this.opts = { ...DEFAULTS, ...options }
    for (const [k, v] of Object.entries(this.opts)) {
      if (typeof v === 'number' && (!Number.isSafeInteger(v) || v < 1)) throw new MirrorOptionError(`[mirror] ${k} must be a positive integer, got ${String(v)}`)
    }
    if (this.opts.headersTimeoutMs > this.opts.requestTimeoutMs) throw new MirrorOptionError('[mirror] the headers timeout must not exceed the request timeout')
    if ((this.opts.tlsCert === '') !== (this.opts.tlsKey === '')) throw new MirrorOptionError('[mirror] tls_cert and tls_key go together')
    const { host } = parseAddress(this.opts.address)
    if (!isLoopback(host) && !this.opts.public) throw new MirrorOptionError(`[mirror] address ${this.opts.address} is not loopback: set public = true to serve other hosts (and consider tls_cert/tls_key and credentials)`)
    this.log = components.logger.child({ component: 'mirror' })
    // Every block read through the fetch path, for a request or an image being opened, is bounded.
    const blockTimeoutMs = this.opts.blockTimeoutMs
    const getBlock = async (cid: CID, signal?: AbortSignal): Promise<Uint8Array> => {
      const d = deadline(blockTimeoutMs, signal)
      try {
        const bytes = await collectBlock(components.blocks.get(cid, { signal: d.signal }))
        verifyBlock(cid, bytes)
        return bytes
      } finally {
        d.clear()
      }
    }
    const boundedGet: BlockFetchPath['get'] = async function * (cid, o) {
      const d = deadline(blockTimeoutMs, o?.signal)
      try {
        yield * components.blocks.get(cid, { ...o, signal: d.signal })
      } finally {
        d.clear()
      }
    }
    this.registry = new RegistryApi({
      views: new ImageViews({ get: boundedGet }, { maxEntries: this.opts.openImages, openTimeoutMs: this.opts.openTimeoutMs }),
      index: components.index,
      hasLocal: async (cid) => await components.localBlockstore.has(cid),
      getBlock,
      readMany: components.localBlockstore.readMany != null ? async (cids, signal, maxBytes) => await components.localBlockstore.readMany?.(cids, { signal, maxBytes }) ?? [] : undefined,
      spans: spansOf(components.localBlockstore),
      logger: this.log
    }, {
      concurrency: this.opts.streamConcurrency,
      batchLeaves: this.opts.streamBatchLeaves,
      batchBytes: this.opts.streamBatchBytes,
      aheadBytes: this.opts.streamAheadBytes,
      cachedNodes: this.opts.cachedNodes,
      matchedBlobs: this.opts.matchedBlobs,
      cachedExtents: this.opts.cachedExtents,
      minExtentBytes: this.opts.minExtentBytes,
      extentBytes: this.opts.extentBytes,
      extentBuffers: this.opts.extentBuffers,
      learnTimeoutMs: this.opts.extentLookupTimeoutMs,
      maxManifestBytes: this.opts.maxManifestBytes
    })
    this.gateway = new GatewayApi({
      has: async (cid) => await components.localBlockstore.has(cid),
      get: async (cid, signal) => await collectBlock(components.localBlockstore.get(cid, { signal })),
      readMany: components.localBlockstore.readMany != null ? async (cids, signal, maxBytes) => await components.localBlockstore.readMany?.(cids, { signal, maxBytes }) ?? [] : undefined,
      logger: this.log
    }, { batchLeaves: this.opts.streamBatchLeaves, batchBytes: this.opts.streamBatchBytes, writeBytes: this.opts.streamBatchBytes })
  }

  /** Requests answered (and refused as too many), blob answers and the blob bytes sent (`RegistryApi.counts`). */
  stats (): MirrorStats {
    return { requests: this.requests, refused: this.refused, ...this.registry.counts }
  }

  /** `http(s)://host:port` once listening. */
  get url (): string {
    const a = this.server?.address()
    if (a == null || typeof a === 'string') throw new MirrorOptionError('the mirror is not listening')
    const host = a.family === 'IPv6' ? `[${a.address}]` : a.address
    return `${this.opts.tlsCert !== '' ? 'https' : 'http'}://${host}:${a.port}`
  }

  async start (): Promise<void> {
    const o = this.opts
    if (o.credentials !== '') this.auth = await BasicAuth.load(o.credentials, this.log)
    const common = { maxHeaderSize: o.maxHeaderBytes, requestTimeout: o.requestTimeoutMs, headersTimeout: o.headersTimeoutMs, keepAliveTimeout: o.keepAliveTimeoutMs, connectionsCheckingInterval: o.timeoutCheckIntervalMs }
    const handler = (req: IncomingMessage, res: ServerResponse): void => { void this.serve(req, res) }
    const server: Server = o.tlsCert !== ''
      ? createHttpsServer({ ...common, cert: await readFile(o.tlsCert), key: await readFile(o.tlsKey), minVersion: 'TLSv1.2' }, handler)
      : createHttpServer(common, handler)
    server.timeout = o.idleTimeoutMs
    server.maxHeadersCount = o.maxHeadersCount
    server.maxRequestsPerSocket = o.maxRequestsPerSocket
    server.maxConnections = o.maxConnections
    server.on('clientError', (err, socket) => { this.log.debug({ err: err.message }, 'bad request'); socket.destroy() })
    const { host, port } = parseAddress(o.address)
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, host, () => { server.off('error', reject); resolve() })
    })
    this.server = server
    if (!isLoopback(host) && this.auth == null) this.log.warn({ address: o.address }, 'the mirror serves other hosts without credentials: anyone who reaches it reads every image and block of the repo')
    this.log.info({ url: this.url, tls: o.tlsCert !== '', auth: this.auth != null }, 'mirror listening')
  }

  async stop (): Promise<void> {
    const s = this.server
    if (s == null) return
    this.server = undefined
    const closed = new Promise<void>(resolve => { s.close(() => { resolve() }) })
    s.closeIdleConnections()
    // Streams in flight are cut: a stopping node does not wait for slow readers.
    s.closeAllConnections()
    await closed
  }

  private async serve (req: IncomingMessage, res: ServerResponse): Promise<void> {
    let url: URL
    try {
      url = new URL(req.url ?? '/', 'http://mirror.invalid')
    } catch {
      // A target that is no URL path ("//", "///:"): `new URL` throws, and nothing above this
      // handler would catch it (an unhandled rejection ends the process).
      this.requests++
      this.fail(res, false, new GatewayRequestError(400, 'malformed request target'))
      return
    }
    const path = url.pathname
    const isRegistry = path === '/v2' || path.startsWith('/v2/')
    const signal = clientGone(req, res)
    this.requests++
    if (this.active >= this.opts.maxStreams) {
      this.refused++
      this.fail(res, isRegistry, new DistributionError(429, 'TOOMANYREQUESTS', 'too many requests at once', undefined), { 'Retry-After': '1' })
      return
    }
    this.active++
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        this.fail(res, isRegistry, new DistributionError(405, 'UNSUPPORTED', 'this mirror is read-only: GET and HEAD only'), { Allow: 'GET, HEAD' })
        return
      }
      if (this.auth != null && await this.auth.check(req.headers.authorization) == null) {
        this.fail(res, isRegistry, new DistributionError(401, 'UNAUTHORIZED', 'authentication required'), { 'WWW-Authenticate': 'Basic realm="ipfs-estargz mirror", charset="UTF-8"' })
        return
      }
      if (isRegistry) await this.registry.handle(req, res, path, signal)
      else if (path.startsWith('/ipfs/')) await this.gateway.handle(req, res, path, url.searchParams, signal)
      else throw new GatewayRequestError(404, 'not found: this mirror serves /v2/ and /ipfs/<cid>')
    } catch (err) {
      if (res.headersSent) {
        res.destroy()
      } else if (signal.aborted) {
        res.destroy()
      } else {
        if (!(err instanceof DistributionError) && !(err instanceof GatewayRequestError)) this.log.warn({ path, err: (err as Error).message }, 'mirror request failed')
        this.fail(res, isRegistry, err)
      }
    } finally {
      this.active--
    }
  }

  private fail (res: ServerResponse, isRegistry: boolean, err: unknown, headers: Record<string, string> = {}): void {
    if (res.headersSent) { res.destroy(); return }
    const e = err as Error & { status?: number }
    const status = err instanceof DistributionError || err instanceof GatewayRequestError ? err.status : 500
    let body: string
    let type: string
    if (isRegistry) {
      body = err instanceof DistributionError ? errorBody(err.ociCode, err.message, err.detail) : errorBody('UNKNOWN', e.message)
      type = 'application/json'
      res.setHeader('Docker-Distribution-API-Version', 'registry/2.0')
    } else {
      body = `${e.message}\n`
      type = 'text/plain; charset=utf-8'
    }
    res.writeHead(status, { ...headers, 'Content-Type': type, 'Content-Length': String(Buffer.byteLength(body)) })
    res.end(res.req.method === 'HEAD' ? undefined : body)
  }
}
