import { lstat, mkdir } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { ChunkCache, MountManager, sweepUnreferencedChunks, unmountHelper, type LayerFs } from '../fs/index.js'
import type { Logger } from '../logging.js'
import { usePrivateUmask } from '../private-files.js'
import type { RangeSource } from '../source/index.js'
import { ReadaheadSource } from '../source/readahead.js'
import { serveUnixHttp, type Route, type UnixHttpServer } from '../unix-http.js'
import type { TocHint } from '../wire/index.js'
import { ROUTES, type Attach, type GcReply, type GcRequest, type Health, type MountInfo, type MountReply, type MountRequest, type MountSettings, type PrefetchReply, type PrefetchRequest, type WarmReply, type WarmRequest } from './api.js'
import { BlobClient } from './blob-source.js'
import { CallRefusedError, FuseManagerError, MountCancelledError, MountConflictError, NotMountedError } from './errors.js'
import { RangePrefetches } from './range-prefetch.js'
import { WarmCache, warmKey, type Opened } from './warm.js'

/** FUSE manager defaults, in one place. */
export const DEFAULTS = {
  /** With no mounts and no daemon answering for this long, the manager exits by itself. */
  idleExitMs: 60_000,
  /** How often that is checked (and layers opened ahead that no mount took are released). */
  idleCheckMs: 5_000,
  /** Layers opened ahead of their mounts (`POST /v1/warm`) kept at most... */
  warmMaxLayers: 64,
  /** ...and for at most this long each, waiting for their mount. */
  warmTtlMs: 60_000,
  /** Ranges one `POST /v1/prefetch` may name (a prefetch record holds at most 2048). */
  prefetchMaxRanges: 4096
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
  warmMaxLayers?: number
  warmTtlMs?: number
  prefetchMaxRanges?: number
}

interface Mounted { cid: string, tocDigest: string, fs: LayerFs }

/** A mount in progress: `ac` cancels it (its caller hung up, or an unmount of its mountpoint came). */
interface Pending { cid: string, job: Promise<MountReply>, ac: AbortController }

/** A call the manager refuses that has no error of its own: answered with `status` and the code ERR_FUSE_MANAGER. */
const refused = (status: number, message: string): FuseManagerError => new FuseManagerError(message, { status })

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
  private readonly pending = new Map<string, Pending>()
  private readonly warmed: WarmCache
  private readonly rangePrefetches: RangePrefetches
  private readonly tocHints = { given: 0, refused: 0 }
  private cache?: ChunkCache
  private mounts?: MountManager
  private http?: UnixHttpServer
  private idleTimer?: NodeJS.Timeout
  private idleSince = Date.now()
  private stopping?: Promise<void>
  private readonly exited: Promise<void>
  private signalExit!: () => void

  constructor (components: { logger: Logger }, private readonly options: FuseManagerOptions) {
    this.log = components.logger.child({ component: 'fuse-manager' })
    const maxLayers = options.warmMaxLayers ?? DEFAULTS.warmMaxLayers
    const ttlMs = options.warmTtlMs ?? DEFAULTS.warmTtlMs
    this.warmed = new WarmCache({ logger: this.log }, { maxLayers, ttlMs })
    // a layer waits for its ranges as long as an opened layer waits for its mount
    this.rangePrefetches = new RangePrefetches({ logger: this.log, find: (cid) => this.openLayer(cid) }, { maxRanges: options.prefetchMaxRanges ?? DEFAULTS.prefetchMaxRanges, maxWaiting: maxLayers, waitingTtlMs: ttlMs })
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
    // A mount's answer takes as long as the mount: the daemon bounds it and hangs up when it
    // stops waiting, which cancels the mount.
    this.http = await serveUnixHttp(this.routes(), {
      socket: o.socket,
      code: FuseManagerError.code,
      statusOf: (err) => err instanceof CallRefusedError || err instanceof FuseManagerError ? err.status : undefined,
      onError: (err, status, req) => { if (status === 500) this.log.warn({ url: req.url, err: err.message }, 'call failed') }
    })
    const idleExitMs = o.idleExitMs ?? DEFAULTS.idleExitMs
    this.idleTimer = setInterval(() => { this.checkIdle() }, Math.max(100, Math.min(o.idleCheckMs ?? DEFAULTS.idleCheckMs, idleExitMs / 2)))
    this.idleTimer.unref()
    this.log.info({ socket: o.socket }, 'FUSE manager started') // its pid is every line's
  }

  /** Unmounts every layer (lazily: open files never make it hang) and closes the socket. */
  async stop (): Promise<void> {
    this.stopping ??= (async () => {
      try {
        await this.shutdownParts()
        this.log.info('FUSE manager stopped')
      } catch (err) {
        this.log.error({ err }, 'FUSE manager stop failed')
      } finally {
        // whatever failed, the process may end (`done()`), or SIGTERM would never end it
        this.signalExit()
      }
    })()
    await this.stopping
  }

  /** The parts of `stop()`, in order. */
  private async shutdownParts (): Promise<void> {
    if (this.idleTimer != null) clearInterval(this.idleTimer)
    const http = this.http
    this.http = undefined
    await http?.close()
    for (const p of this.pending.values()) p.ac.abort()
    // Before the layers stop: their stop waits for their reads, and a read waits for a daemon
    // to come back (for a minute per read, one read after the other) unless the client is closed.
    this.blobs.close()
    await Promise.allSettled([...this.pending.values()].map(async p => await p.job))
    await this.warmed.clear()
    await this.mounts?.stop()
    this.mounted.clear()
    await this.cache?.stop()
  }

  health (): Health {
    const helper = unmountHelper()
    return {
      ok: true,
      pid: process.pid,
      blobSocket: this.blobs.attached,
      mounts: this.mounted.size,
      cache: this.cache?.stats(),
      warm: this.warmed.stats(),
      prefetch: this.rangePrefetches.stats(),
      tocHints: { ...this.tocHints },
      ...(helper != null ? { unmountHelper: { pid: helper.pid, ...helper.counts } } : {})
    }
  }

  attach (body: Attach): void {
    if (typeof body?.blobSocket !== 'string' || body.blobSocket === '') throw refused(400, 'attach needs { blobSocket }')
    this.blobs.attach(body.blobSocket)
    this.log.info({ blobSocket: body.blobSocket }, 'daemon attached')
    // One call now, not awaited: it says early whether the socket serves blobs, and it is the
    // process's first HTTP request, whose one-time costs (Node's client code compiled, the
    // connection opened) would otherwise fall on a pull's first TOC read (~40 ms measured).
    void this.blobs.alive().then((ok) => {
      if (!ok) this.log.warn({ blobSocket: body.blobSocket }, 'the attached daemon\'s blob API does not answer yet; reads wait for it')
    })
  }

  /**
   * Opens a layer a mount will soon ask for (footer and TOC, verified against `tocDigest`) and
   * keeps it ready: the mount of the same CID, TOC digest and settings takes it.
   */
  async warm (body: WarmRequest, signal: AbortSignal): Promise<WarmReply> {
    if (typeof body?.cid !== 'string' || typeof body.tocDigest !== 'string') throw refused(400, 'warm needs { cid, tocDigest }')
    if (body.size !== undefined && (!Number.isSafeInteger(body.size) || body.size <= 0)) throw refused(400, 'warm: size must be a positive integer')
    checkTocHint(body.toc, 'warm')
    const { mounts, cache } = this.ready()
    const s = body.settings ?? {}
    const log = this.log.child({ cid: body.cid })
    const started = performance.now()
    const { opened, started: isNew } = this.warmed.warm(warmKey(body.cid, body.tocDigest, s), async () => {
      const { source, opened: reads } = traced(this.sourceOf(body.cid, s, body.size))
      const fs = await mounts.openLayer({ source, logger: log, cache, ...this.tocMemberOf(body.toc) }, { ...this.layerOptions(s), tocDigest: body.tocDigest, signal })
      log.debug({ tocDigest: fs.estargz.tocDigest, tocMs: Math.round(performance.now() - started), reads: reads() }, 'layer opened ahead of its mount')
      this.rangePrefetches.opened(body.cid, fs)
      return { fs, source }
    })
    const fs = (await opened).fs
    return { opened: isNew, tocDigest: fs.estargz.tocDigest }
  }

  async mount (body: MountRequest, signal: AbortSignal): Promise<MountReply> {
    if (typeof body?.mountpoint !== 'string' || typeof body.cid !== 'string') throw refused(400, 'mount needs { mountpoint, cid }')
    checkTocHint(body.toc, 'mount')
    if (signal.aborted) throw new MountCancelledError('the caller hung up before the mount started')
    const mp = resolve(body.mountpoint)
    const busy = this.pending.get(mp)
    if (busy != null) return await busy.job // the same layer asked twice (a retried call)
    const live = this.mounted.get(mp)
    if (live != null) {
      if (live.cid !== body.cid) throw new MountConflictError(`${mp} already holds layer ${live.cid}, not ${body.cid}`)
      return { mounted: false, tocDigest: live.tocDigest }
    }
    const ac = new AbortController()
    const cancel = (): void => ac.abort()
    signal.addEventListener('abort', cancel, { once: true })
    const job = this.mountNew(mp, body, ac.signal)
    this.pending.set(mp, { cid: body.cid, job, ac })
    try {
      return await job
    } finally {
      signal.removeEventListener('abort', cancel)
      this.pending.delete(mp)
    }
  }

  /**
   * A new mount. Cancelled (`signal`) at any step, it leaves nothing mounted: a FUSE mount that
   * completes after the cancel is unmounted before the job ends, so whoever waits for the job
   * (the caller's unmount) knows the mountpoint is free for good.
   */
  private async mountNew (mp: string, body: MountRequest, signal: AbortSignal): Promise<MountReply> {
    const { mounts, cache } = this.ready()
    const s = body.settings ?? {}
    const log = this.log.child({ mountpoint: mp, cid: body.cid })
    const t0 = performance.now()
    const ahead = body.tocDigest != null ? this.warmed.take(warmKey(body.cid, body.tocDigest, s)) : undefined
    let opened: Opened | undefined
    if (ahead != null) {
      try {
        opened = await untilAborted(ahead, signal)
      } catch (err) {
        if (signal.aborted) {
          void ahead.then(async o => { await o.fs.stop(); await o.source.close?.() }, () => {})
          throw new MountCancelledError(`mount of ${body.cid} at ${mp} cancelled`)
        }
        log.debug({ err: (err as Error).message }, 'opening the layer ahead failed; opening it again')
      }
    }
    const warm = opened != null
    if (opened == null) {
      const { source, opened: reads } = traced(this.sourceOf(body.cid, s))
      opened = { fs: await mounts.openLayer({ source, logger: log, cache, ...this.tocMemberOf(body.toc) }, { ...this.layerOptions(s), tocDigest: body.tocDigest, signal }), source }
      log.debug({ tocMs: Math.round(performance.now() - t0), reads: reads() }, 'layer opened (footer and TOC)')
      this.rangePrefetches.opened(body.cid, opened.fs)
    }
    const t1 = performance.now()
    const { fs, source } = opened
    if (signal.aborted) {
      await fs.stop().catch(() => {})
      await source.close?.().catch(() => {})
      throw new MountCancelledError(`mount of ${body.cid} at ${mp} cancelled`)
    }
    // a cancel during the prefetch ends it early; the FUSE mount that follows is undone below
    const stopEarly = (): void => { void fs.stop() }
    signal.addEventListener('abort', stopEarly, { once: true })
    try {
      await mounts.mountLayer(mp, { source, logger: log, cache }, this.layerOptions(s), fs)
    } finally {
      signal.removeEventListener('abort', stopEarly)
    }
    if (signal.aborted) {
      await mounts.unmount(mp)
      log.info('mount cancelled by the daemon after the FUSE mount: unmounted')
      throw new MountCancelledError(`mount of ${body.cid} at ${mp} cancelled`)
    }
    this.mounted.set(mp, { cid: body.cid, tocDigest: fs.estargz.tocDigest, fs })
    const timings = { tocMs: Math.round(t1 - t0), mountMs: Math.round(performance.now() - t1), totalMs: Math.round(performance.now() - t0) }
    log.info({ tocDigest: fs.estargz.tocDigest, warm, ...timings }, 'layer mounted lazily')
    return { mounted: true, tocDigest: fs.estargz.tocDigest, warm, timings }
  }

  /**
   * The TOC member source of a request's hint (one read of the member's own block), if any.
   * Counted as given, and as refused when the open finds it does not hold (and reads the footer).
   */
  private tocMemberOf (toc: TocHint | undefined): { tocMember?: { offset: number, source: RangeSource, onRefused: () => void } } {
    if (toc == null) return {}
    this.tocHints.given++
    const onRefused = (): void => { this.tocHints.refused++ }
    return { tocMember: { offset: toc.offset, source: this.blobs.source(toc.cid), onRefused } }
  }

  private sourceOf (cid: string, s: MountSettings, size?: number): ReadaheadSource {
    return new ReadaheadSource(this.blobs.source(cid, size), { windowBytes: s.readaheadBytes ?? 0 })
  }

  private layerOptions (s: MountSettings): { prefetchTimeoutMs?: number, waitForPrefetchAtMount?: boolean, backgroundFetch?: boolean, fetchTimeoutMs?: number, readWindowBytes?: number, neighbourBytes?: number, allowNoVerification?: boolean } {
    return {
      prefetchTimeoutMs: s.prefetchTimeoutMs,
      waitForPrefetchAtMount: s.waitForPrefetchAtMount,
      backgroundFetch: s.backgroundFetch,
      fetchTimeoutMs: s.fetchTimeoutMs,
      readWindowBytes: s.readWindowBytes,
      neighbourBytes: s.neighbourBytes,
      allowNoVerification: s.allowNoVerification
    }
  }

  /** Caches a layer's recorded ranges (`POST /v1/prefetch`). */
  prefetch (body: PrefetchRequest): PrefetchReply {
    this.ready()
    return { state: this.rangePrefetches.offer(body?.cid, body?.ranges) }
  }

  /** The layer of `cid` where it is open now: mounted, or opened ahead of its mount. */
  private openLayer (cid: string): LayerFs | Promise<LayerFs | undefined> | undefined {
    for (const m of this.mounted.values()) if (m.cid === cid) return m.fs
    // a mount in progress may have taken the layer opened ahead (or opened it already): its
    // ranges go to it once it is mounted, not to a wait that no later open would end
    for (const [mp, p] of this.pending) {
      if (p.cid === cid) return p.job.then(() => this.mounted.get(mp)?.fs, () => undefined)
    }
    return this.warmed.find(cid)?.then(o => o.fs)
  }

  /** Cancels a mount in progress there (waiting until it is undone), then unmounts what is mounted. */
  async unmount (mountpoint: string): Promise<void> {
    if (typeof mountpoint !== 'string') throw refused(400, 'unmount needs { mountpoint }')
    const mp = resolve(mountpoint)
    const busy = this.pending.get(mp)
    if (busy != null) {
      busy.ac.abort()
      await busy.job.catch(() => {})
      this.log.info({ mountpoint: mp, cid: busy.cid }, 'mount in progress cancelled by an unmount')
    }
    const was = this.mounted.delete(mp)
    await this.ready().mounts.unmount(mp)
    if (was) this.log.info({ mountpoint: mp }, 'layer unmounted')
  }

  /**
   * Answers once the layer mounted there is ready for a workload: its prioritized files cached,
   * or their wait past the prefetch timeout (a snapshot is about to be stacked on it).
   */
  async check (mountpoint: string): Promise<void> {
    if (typeof mountpoint !== 'string') throw refused(400, 'check needs { mountpoint }')
    const m = this.mounted.get(resolve(mountpoint))
    if (m == null) throw new NotMountedError(`no lazy layer is mounted at ${mountpoint}`)
    await m.fs.waitForPrefetch()
  }

  list (): MountInfo[] {
    return [...this.mounted].map(([mountpoint, m]) => {
      const stats = m.fs.stats()
      return { mountpoint, cid: m.cid, tocDigest: m.tocDigest, bytesFetched: stats.bytesFetched ?? 0, stats }
    })
  }

  /**
   * Removes the cached chunks no mounted layer's TOC names: the chunks of layers mounted now stay
   * (the others are read again from the blocks if those layers are mounted again).
   */
  async gc (body: GcRequest): Promise<GcReply> {
    const { cache } = this.ready()
    const swept = await sweepUnreferencedChunks(cache, [...this.mounted.values()].map(m => m.fs), { dryRun: body?.dryRun === true })
    this.log.info({ ...swept, dryRun: body?.dryRun === true }, 'chunk cache collected')
    return swept
  }

  private ready (): { mounts: MountManager, cache: ChunkCache } {
    if (this.mounts == null || this.cache == null || this.stopping != null) throw refused(503, 'the FUSE manager is not running')
    return { mounts: this.mounts, cache: this.cache }
  }

  /** No mounts and no daemon for a while: nothing will ever ask us for anything again. */
  private checkIdle (): void {
    this.warmed.sweep()
    // Our socket removed (the daemon's root deleted): no daemon can reach us again, and the next
    // one would start another manager beside us. Our mounts are orphans: stop.
    void lstat(this.options.socket).catch(() => {
      if (this.http == null || this.stopping != null) return
      this.log.warn({ socket: this.options.socket }, 'the API socket was removed: no daemon can reach this manager again; stopping')
      void this.stop()
    })
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

  /**
   * The API (src/fusemgr/api.ts). Errors answer `{ error, code }`: the error's code (ours, or
   * Node's errno), else the manager's own; a call refused without an error of its own (a missing
   * field, no such route, not running) answers the manager's code too.
   */
  private routes (): Route[] {
    const field = (body: unknown, name: string): unknown => (body as Record<string, unknown> | null | undefined)?.[name]
    return [
      { method: 'GET', path: ROUTES.health, handle: () => this.health() },
      { method: 'GET', path: ROUTES.mounts, handle: () => this.list() },
      { method: 'POST', path: ROUTES.attach, handle: ({ body }) => { this.attach(body as Attach); return {} } },
      { method: 'POST', path: ROUTES.mount, handle: async ({ body, signal }) => await this.mount(body as MountRequest, signal) },
      { method: 'POST', path: ROUTES.warm, handle: async ({ body, signal }) => await this.warm(body as WarmRequest, signal) },
      { method: 'POST', path: ROUTES.prefetch, handle: ({ body }) => this.prefetch(body as PrefetchRequest) },
      { method: 'POST', path: ROUTES.unmount, handle: async ({ body }) => { await this.unmount(field(body, 'mountpoint') as string); return {} } },
      { method: 'POST', path: ROUTES.gc, handle: async ({ body }) => await this.gc(body as GcRequest) },
      { method: 'POST', path: ROUTES.check, handle: async ({ body }) => { await this.check(field(body, 'mountpoint') as string); return {} } },
      {
        method: 'POST',
        path: ROUTES.shutdown,
        handle: () => {
          setImmediate(() => { void this.stop() })
          return {}
        }
      }
    ]
  }
}

/** `p`, or a rejection as soon as `signal` aborts (`p` goes on). */
async function untilAborted<T> (p: Promise<T>, signal: AbortSignal): Promise<T> {
  signal.throwIfAborted()
  return await new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort))
  })
}

/**
 * Times the reads of a layer's open (size, footer, TOC) for the log, as `what ms`, until
 * `opened()` returns them; later reads (chunks) are not recorded.
 */
/** A request's TOC hint must be `{ cid: string, offset: non-negative integer }` when present. */
function checkTocHint (toc: unknown, what: string): void {
  if (toc === undefined) return
  const t = toc as Partial<TocHint> | null
  if (typeof t?.cid !== 'string' || t.cid === '' || !Number.isSafeInteger(t.offset) || (t.offset as number) < 0) throw refused(400, `${what}: toc must be { cid, offset } with a non-negative integer offset`)
}

function traced (inner: RangeSource): { source: RangeSource, opened: () => string[] } {
  const reads: string[] = []
  let recording = true
  const time = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
    if (!recording) return await fn()
    const t = performance.now()
    try {
      return await fn()
    } finally {
      if (reads.length < 16) reads.push(`${what} ${Math.round(performance.now() - t)}ms`)
    }
  }
  const source: RangeSource = {
    size: async () => await time('size', async () => await inner.size()),
    // the hint goes on: without it the background fetch reached the daemon as on-demand reads
    read: async (offset, length, signal, hint) => await time(`${length}B@${offset}`, async () => await inner.read(offset, length, signal, hint)),
    close: async () => { await inner.close?.() }
  }
  return { source, opened: () => { recording = false; return reads } }
}
