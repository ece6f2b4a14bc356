import { chmod, mkdir, rm } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { dirname, resolve } from 'node:path'
import { ChunkCache, MountManager, type LayerFs } from '../fs/index.js'
import type { Logger } from '../logging.js'
import { usePrivateUmask } from '../private-files.js'
import { ReadaheadSource } from '../source/readahead.js'
import { ROUTES, type Attach, type Health, type MountInfo, type MountReply, type MountRequest } from './api.js'
import { BlobClient } from './blob-source.js'

/** FUSE manager defaults, in one place. */
export const DEFAULTS = {
  /** With no mounts and no daemon answering for this long, the manager exits by itself. */
  idleExitMs: 60_000,
  /** How often that is checked. */
  idleCheckMs: 5_000
} as const

export interface FuseManagerOptions {
  /** The manager's API socket. */
  socket: string
  /** Stale FUSE mounts under this directory are cleared at start (a previous manager died). */
  mountRoot: string
  /** The decompressed-chunk cache (shared by all mounts). */
  cacheDir: string
  diskCacheBytes?: number
  memoryCacheBytes?: number
  idleExitMs?: number
  idleCheckMs?: number
}

interface Mounted { cid: string, tocDigest: string, fs: LayerFs }

class HttpError extends Error {
  constructor (readonly status: number, message: string, readonly code = 'ERR_FUSE_MANAGER') {
    super(message)
  }
}

/**
 * Holds the lazy layer mounts in a process of their own, so they outlive the daemon: a FUSE
 * mount dies with the process serving it, and an overlayfs rootfs built on a dead FUSE mount
 * stays broken even after the layer is mounted again (the overlay keeps the old superblock).
 * stargz-snapshotter solves this with its fuse-manager; this is ours. The manager reads layer
 * bytes through the daemon's blob API (it has no Helia node), verifies every chunk against the
 * TOC as an in-process mount does, and keeps the chunk cache. When the daemon restarts, reads
 * of cached chunks go on; uncached ones wait for the new daemon to attach.
 */
export class FuseManager {
  private readonly log: Logger
  private readonly blobs = new BlobClient()
  private readonly mounted = new Map<string, Mounted>()
  private readonly pending = new Map<string, Promise<MountReply>>()
  private cache?: ChunkCache
  private mounts?: MountManager
  private server?: Server
  private idleTimer?: NodeJS.Timeout
  private idleSince = Date.now()
  private stopping?: Promise<void>
  private readonly exited: Promise<void>
  private signalExit!: () => void

  constructor (components: { logger: Logger }, private readonly options: FuseManagerOptions) {
    this.log = components.logger.child({ component: 'fuse-manager' })
    this.exited = new Promise(resolve => { this.signalExit = resolve })
  }

  /** Resolves when the manager has stopped (shutdown call, idle exit or `stop()`). */
  async done (): Promise<void> {
    await this.exited
  }

  async start (): Promise<void> {
    const o = this.options
    usePrivateUmask() // the chunk cache holds image files' contents
    this.cache = new ChunkCache({ logger: this.log }, { dir: o.cacheDir, maxBytes: o.diskCacheBytes, memoryBytes: o.memoryCacheBytes })
    await this.cache.start()
    this.mounts = new MountManager({ logger: this.log }, { root: o.mountRoot })
    await this.mounts.start()
    await mkdir(dirname(o.socket), { recursive: true })
    await rm(o.socket, { force: true })
    const server = createServer((req, res) => { this.route(req, res) })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(o.socket, () => { server.off('error', reject); resolve() })
    })
    await chmod(o.socket, 0o600)
    this.server = server
    const idleExitMs = o.idleExitMs ?? DEFAULTS.idleExitMs
    this.idleTimer = setInterval(() => { this.checkIdle() }, Math.max(100, Math.min(o.idleCheckMs ?? DEFAULTS.idleCheckMs, idleExitMs / 2)))
    this.idleTimer.unref()
    this.log.info({ socket: o.socket, pid: process.pid }, 'FUSE manager started')
  }

  /** Unmounts every layer (lazily: open files never make it hang) and closes the socket. */
  async stop (): Promise<void> {
    this.stopping ??= (async () => {
      if (this.idleTimer != null) clearInterval(this.idleTimer)
      const server = this.server
      this.server = undefined
      if (server != null) {
        server.closeAllConnections()
        await new Promise<void>(resolve => server.close(() => resolve()))
        await rm(this.options.socket, { force: true })
      }
      await this.mounts?.stop()
      this.mounted.clear()
      this.blobs.close()
      await this.cache?.stop()
      this.log.info('FUSE manager stopped')
      this.signalExit()
    })()
    await this.stopping
  }

  health (): Health {
    return { ok: true, pid: process.pid, blobSocket: this.blobs.attached, mounts: this.mounted.size, cache: this.cache?.stats() }
  }

  attach (body: Attach): void {
    if (typeof body?.blobSocket !== 'string' || body.blobSocket === '') throw new HttpError(400, 'attach needs { blobSocket }')
    this.blobs.attach(body.blobSocket)
    this.log.info({ blobSocket: body.blobSocket }, 'daemon attached')
  }

  async mount (body: MountRequest, signal: AbortSignal): Promise<MountReply> {
    if (typeof body?.mountpoint !== 'string' || typeof body.cid !== 'string') throw new HttpError(400, 'mount needs { mountpoint, cid }')
    const mp = resolve(body.mountpoint)
    const busy = this.pending.get(mp)
    if (busy != null) return await busy // the same layer asked twice (a retried call)
    const live = this.mounted.get(mp)
    if (live != null) {
      if (live.cid !== body.cid) throw new HttpError(409, `${mp} already holds layer ${live.cid}, not ${body.cid}`, 'ERR_MOUNT_CONFLICT')
      return { mounted: false, tocDigest: live.tocDigest }
    }
    const job = this.mountNew(mp, body, signal)
    this.pending.set(mp, job)
    try {
      return await job
    } finally {
      this.pending.delete(mp)
    }
  }

  private async mountNew (mp: string, body: MountRequest, signal: AbortSignal): Promise<MountReply> {
    const { mounts, cache } = this.ready()
    const s = body.settings ?? {}
    const log = this.log.child({ mountpoint: mp, cid: body.cid })
    const source = new ReadaheadSource(this.blobs.source(body.cid), { windowBytes: s.readaheadBytes ?? 0 })
    const fs = await mounts.mountLayer(mp, { source, logger: log, cache }, {
      tocDigest: body.tocDigest,
      signal,
      prefetchTimeoutMs: s.prefetchTimeoutMs,
      backgroundFetch: s.backgroundFetch,
      fetchTimeoutMs: s.fetchTimeoutMs,
      readWindowBytes: s.readWindowBytes,
      allowNoVerification: s.allowNoVerification
    })
    this.mounted.set(mp, { cid: body.cid, tocDigest: fs.estargz.tocDigest, fs })
    log.info({ tocDigest: fs.estargz.tocDigest }, 'layer mounted lazily')
    return { mounted: true, tocDigest: fs.estargz.tocDigest }
  }

  async unmount (mountpoint: string): Promise<void> {
    if (typeof mountpoint !== 'string') throw new HttpError(400, 'unmount needs { mountpoint }')
    const mp = resolve(mountpoint)
    this.mounted.delete(mp)
    await this.ready().mounts.unmount(mp)
    this.log.info({ mountpoint: mp }, 'layer unmounted')
  }

  check (mountpoint: string): void {
    if (typeof mountpoint !== 'string') throw new HttpError(400, 'check needs { mountpoint }')
    if (!this.mounted.has(resolve(mountpoint))) throw new HttpError(404, `no lazy layer is mounted at ${mountpoint}`, 'ERR_NOT_MOUNTED')
  }

  list (): MountInfo[] {
    return [...this.mounted].map(([mountpoint, m]) => ({ mountpoint, cid: m.cid, tocDigest: m.tocDigest, bytesFetched: m.fs.stats().bytesFetched ?? 0 }))
  }

  private ready (): { mounts: MountManager, cache: ChunkCache } {
    if (this.mounts == null || this.cache == null || this.stopping != null) throw new HttpError(503, 'the FUSE manager is not running')
    return { mounts: this.mounts, cache: this.cache }
  }

  /** No mounts and no daemon for a while: nothing will ever ask us for anything again. */
  private checkIdle (): void {
    if (this.mounted.size > 0 || this.pending.size > 0) {
      this.idleSince = Date.now()
      return
    }
    void this.blobs.alive().then((alive) => {
      if (alive) this.idleSince = Date.now()
      else if (Date.now() - this.idleSince >= (this.options.idleExitMs ?? DEFAULTS.idleExitMs)) {
        this.log.info('no mounts and no daemon: exiting')
        void this.stop()
      }
    })
  }

  private route (req: IncomingMessage, res: ServerResponse): void {
    const reply = (status: number, body: unknown): void => {
      if (res.headersSent) { res.end(); return }
      res.writeHead(status, { 'content-type': 'application/json' }).end(body === undefined ? '' : JSON.stringify(body))
    }
    const ac = new AbortController()
    res.on('close', () => { if (!res.writableFinished) ac.abort() })
    const handle = async (body: unknown): Promise<unknown> => {
      const key = `${req.method ?? ''} ${req.url ?? ''}`
      const b = body as Record<string, unknown> | undefined
      switch (key) {
        case `GET ${ROUTES.health}`: return this.health()
        case `GET ${ROUTES.mounts}`: return this.list()
        case `POST ${ROUTES.attach}`: this.attach(b as unknown as Attach); return {}
        case `POST ${ROUTES.mount}`: return await this.mount(b as unknown as MountRequest, ac.signal)
        case `POST ${ROUTES.unmount}`: await this.unmount(b?.mountpoint as string); return {}
        case `POST ${ROUTES.check}`: this.check(b?.mountpoint as string); return {}
        case `POST ${ROUTES.shutdown}`:
          setImmediate(() => { void this.stop() })
          return {}
        default: throw new HttpError(404, `no route ${key}`)
      }
    }
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      let body: unknown
      try {
        body = chunks.length === 0 ? undefined : JSON.parse(Buffer.concat(chunks).toString('utf8'))
      } catch {
        reply(400, { error: 'body is not JSON', code: 'ERR_BAD_REQUEST' })
        return
      }
      handle(body).then((out) => reply(200, out), (err: Error & { code?: string, status?: number }) => {
        if (!(err instanceof HttpError)) this.log.warn({ url: req.url, err: err.message }, 'call failed')
        reply(err instanceof HttpError ? err.status : 500, { error: err.message, code: err.code ?? 'ERR_FUSE_MANAGER' })
      })
    })
  }
}
