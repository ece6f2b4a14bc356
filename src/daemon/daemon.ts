import { chmod, mkdir } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { ChunkCache, LayerMounter, MountManager, sweepUnreferencedChunks, type RemoteLayerMounter, type WarmLayer } from '../fs/index.js'
import { openRepo, type OpenRepo } from '../ipfs/index.js'
import { MirrorServer } from '../mirror/index.js'
import { LearnedPrefetch } from '../prefetch-record/index.js'
import type { Logger } from '../logging.js'
import { PRIVATE, usePrivateUmask } from '../private-files.js'
import { ensureFuseManager, FuseManagerUnavailableError, ManagedLayerMounter, type EnsureOptions, type FuseManagerClient } from '../fusemgr/index.js'
import { Snapshotter, SnapshotterServer } from '../snapshotter/index.js'
import { IpfsSource, ReadaheadSource } from '../source/index.js'
import { BlobReader } from './blob-api.js'
import { AutoGc, MountedLayers } from './gc.js'
import { checkConfig, type DaemonConfig } from './config.js'
import { ControlServer, type CommandRunner } from './control.js'
import { LearningLayerMounter } from './learning-mounter.js'
import { learnedPrefetchOptions } from './learned-prefetch.js'
import { HeldImages, nodeOptionsFor } from './p2p.js'
import { HttpListener } from './http.js'
import { LayerOrigins, TrackedLayerMounter, type LayerStats } from './layer-stats.js'
import { Monitoring } from './monitoring.js'

export interface DaemonComponents {
  logger: Logger
  /**
   * Runs a CLI command line for a control-API client, with the daemon's repo and (when the
   * remote mounter can) a way to open layers ahead of the Prepares a pull is about to send.
   */
  runCommand: (argv: string[], io: Parameters<CommandRunner>[1] & { repo: OpenRepo, warmLayers?: WarmLayers, layerStats?: LayerStatsOf }) => Promise<number>
}

export type WarmLayers = (layers: WarmLayer[], signal?: AbortSignal) => Promise<void>

/** The mounted layers' statistics (`stats`), bounded by `signal`. */
export type LayerStatsOf = (signal: AbortSignal) => Promise<LayerStats[]>

/** Mode of the snapshotter socket's folder when we create it (the socket itself is 0660). */
const SOCKET_DIR_MODE = 0o710

/** The FUSE manager's socket sits in the root unless configured. */
export function fuseManagerAddressFor (config: DaemonConfig): string {
  return config.fuseManager.address !== '' ? config.fuseManager.address : join(config.root, 'fuse-manager.sock')
}

/** The control socket sits next to the snapshotter socket unless configured. */
export function apiAddressFor (config: DaemonConfig): string {
  return config.apiAddress !== '' ? config.apiAddress : join(dirname(config.address), 'api.sock')
}

/**
 * The node: the Helia node over the repo at `root`, the containerd snapshotter on its socket,
 * and the control API the CLI uses while the daemon owns the repo. The lazy layer mounts live
 * in the FUSE manager (a detached process started on demand, reading through our blob API) or,
 * with `[fuse_manager] enable = false`, in this process. `start()` mounts the remote snapshots
 * again (or keeps the manager's live ones) before the snapshotter socket accepts calls.
 */
export class Daemon {
  private repo?: OpenRepo
  private cache?: ChunkCache
  private mounts?: MountManager
  private server?: SnapshotterServer
  private control?: ControlServer
  private blobs?: BlobReader
  private learned?: LearnedPrefetch
  private mirror?: MirrorServer
  private held?: HeldImages
  private autoGc?: AutoGc
  private managerClient?: FuseManagerClient
  private supervisor?: NodeJS.Timeout
  private redial?: NodeJS.Timeout
  private stopping?: Promise<void>
  private http?: HttpListener
  private monitoring?: Monitoring
  /** Each layer's blocks by origin, for `stats` and /metrics. */
  private readonly origins = new LayerOrigins()

  constructor (private readonly components: DaemonComponents, readonly config: DaemonConfig) {}

  get openRepo (): OpenRepo | undefined {
    return this.repo
  }

  /** The mirror's listener (its `url`), with `[mirror] enable`. */
  get mirrorServer (): MirrorServer | undefined {
    return this.mirror
  }

  /** Learned prefetch (its `stats()`), unless `[prefetch] enable = false`. */
  get learnedPrefetch (): LearnedPrefetch | undefined {
    return this.learned
  }

  /** The monitoring listener (its `url`), unless `[http] address` is empty or it could not listen. */
  get httpListener (): HttpListener | undefined {
    return this.http
  }

  async start (): Promise<void> {
    const { config } = this
    const logger = this.components.logger
    checkConfig(config) // also a config built without loadConfig (flags, a library user)
    // Everything under the root is private (the node's key, blocks, cached file contents); what
    // others must reach is opened explicitly: the sockets' folder, the sockets, the snapshots' fs.
    usePrivateUmask()
    await mkdir(config.root, { recursive: true, mode: PRIVATE.dirMode })
    const socketDir = dirname(config.address)
    if (await mkdir(socketDir, { recursive: true }) != null) await chmod(socketDir, SOCKET_DIR_MODE)
    this.repo = await openRepo({ logger }, { repo: config.root, ...await nodeOptionsFor(config.ipfs) })
    const { node, index } = this.repo
    try {
      this.keepPeersConnected()
      const held = this.held = new HeldImages({ repo: this.repo, logger }, { intervalMs: config.ipfs.provideIntervalSec * 1000 })
      held.start()
      let mounter: RemoteLayerMounter | undefined
      // learned orders go to the FUSE manager's chunk cache when there is one (the mounter below)
      // only the FUSE manager's mounter takes ranges; in-process mounts read through the blockstore
      const handOff = config.fuseManager.enable ? async (layer: string, ranges: Array<[number, number]>, signal: AbortSignal): Promise<boolean> => await (mounter?.prefetch?.(layer, ranges, signal) ?? false) : undefined
      const learned = this.learned = config.prefetch.enable ? new LearnedPrefetch({ logger, blocks: node.blocks, localBlockstore: node.localBlockstore, libp2p: node.helia.libp2p, handOff }, learnedPrefetchOptions(config)) : undefined
      await learned?.start()
      const openSource = async (cid: string, signal?: AbortSignal): Promise<IpfsSource> => {
        await held.beforeFirstRead(cid, signal)
        return await openIpfsSource(cid, signal)
      }
      const openIpfsSource = async (cid: string, signal?: AbortSignal): Promise<IpfsSource> => await IpfsSource.open(node.blocks, cid, {
        signal,
        readTimeout: config.fs.fetchTimeoutSec * 1000,
        onBlock: (fetch) => { this.origins.count(cid, fetch); learned?.countBlock(fetch) }
      })
      const settings = {
        prefetchTimeoutMs: config.fs.prefetchTimeoutSec * 1000,
        waitForPrefetchAtMount: config.fs.waitForPrefetchAtMount,
        backgroundFetch: config.fs.backgroundFetch,
        fetchTimeoutMs: config.fs.fetchTimeoutSec * 1000,
        readWindowBytes: config.fs.readWindowBytes,
        neighbourBytes: config.fs.neighbourBytes,
        allowNoVerification: config.fs.allowNoVerification
      }
      // The control API (and with the FUSE manager, the blob API its mounts read through) comes
      // first: remounting remote snapshots below may already need it.
      const repo = this.repo
      const warmLayers: WarmLayers = async (layers, signal) => { await mounter?.warm?.(layers, signal) }
      this.blobs = config.fuseManager.enable ? new BlobReader({ logger, openSource, onRead: learned?.onRead }) : undefined
      this.control = new ControlServer({ logger, blobs: this.blobs, run: async (argv, io) => {
        try {
          const layerStats: LayerStatsOf = async (signal) => await (this.monitoring?.layerStats(signal) ?? [])
          return await this.components.runCommand(argv, { ...io, repo, layerStats, ...(mounter?.warm != null ? { warmLayers } : {}) })
        } finally {
          held.announce() // a push or pull may have added images
        }
      } }, { address: apiAddressFor(config), repo: config.root })
      await this.control.start()
      const snapshotRoot = join(config.root, 'snapshotter')
      if (config.fuseManager.enable) {
        const { client } = await ensureFuseManager(this.fuseManagerOptions(), logger)
        await client.attach({ blobSocket: apiAddressFor(config) })
        mounter = new ManagedLayerMounter({ client, logger }, {
          settings: { ...settings, readaheadBytes: config.fs.readaheadBytes },
          warmTimeoutMs: config.snapshotter.remoteMountTimeoutSec * 1000
        })
        this.managerClient = client
      } else {
        this.cache = new ChunkCache({ logger }, { dir: join(config.root, 'cache', 'chunks'), maxBytes: config.fs.diskCacheBytes, memoryBytes: config.fs.memoryCacheBytes })
        await this.cache.start()
        this.mounts = new MountManager({ logger }, { root: snapshotRoot })
        await this.mounts.start() // clears FUSE mounts a crashed daemon left behind
        mounter = new TrackedLayerMounter(new LayerMounter({
          logger,
          mounts: this.mounts,
          cache: this.cache,
          openSource: async (cid, signal) => {
            const source = new ReadaheadSource(await openSource(cid, signal), { windowBytes: config.fs.readaheadBytes })
            return learned != null ? learned.recordReads(cid, source) : source
          }
        }, settings))
      }
      const mountsAt = this.managerClient != null
        ? { manager: this.managerClient }
        : { mounts: this.mounts as MountManager, tracked: mounter as TrackedLayerMounter, cache: this.cache as ChunkCache }
      if (learned != null) mounter = new LearningLayerMounter({ inner: mounter, learned })
      const mounted = new MountedLayers(mounter)
      mounter = mounted
      this.collectWith(mounted)
      const snapshotter = new Snapshotter({ logger, mounter, resolveDigest: (d) => index.digests.get(d)?.toString() }, {
        root: snapshotRoot,
        allowInvalidMountsOnRestart: config.snapshotter.allowInvalidMountsOnRestart,
        remoteMountTimeoutMs: config.snapshotter.remoteMountTimeoutSec * 1000,
        // the FUSE manager keeps the lazy mounts for running containers while we are away
        unmountOnStop: !config.fuseManager.enable
      })
      this.server = new SnapshotterServer({ snapshotter, logger }, { address: config.address })
      await this.server.start()
      if (this.managerClient != null) this.superviseFuseManager(snapshotter)
      this.monitoring = new Monitoring({ repo: this.repo, remote: snapshotter.metrics, origins: this.origins, mountsAt, serving: () => this.stopping == null, learned: () => this.learned?.stats(), mirror: () => this.mirror?.stats() })
      if (config.http.address !== '') await this.startHttp(this.monitoring)
      if (config.mirror.enable) {
        this.mirror = new MirrorServer({ logger, blocks: node.blocks, localBlockstore: node.localBlockstore, index }, mirrorOptions(config))
        await this.mirror.start()
      }
      logger.info({ root: config.root, address: config.address, api: apiAddressFor(config), fuseManager: config.fuseManager.enable ? fuseManagerAddressFor(config) : false, mirror: this.mirror?.url ?? false, http: this.http?.url ?? false, peerId: node.peerId.toString(), listen: node.multiaddrs().map(String) }, 'daemon started')
    } catch (err) {
      await this.stop()
      throw err
    }
  }

  /**
   * The monitoring listener. A bad `[http]` setting stops the start; an address already in use
   * does not: the node serves containers without its metrics (logged as an error).
   */
  private async startHttp (monitoring: Monitoring): Promise<void> {
    const { config } = this
    const http = new HttpListener({
      logger: this.components.logger,
      snapshot: async (signal) => await monitoring.snapshot(signal),
      health: async (signal) => await monitoring.health(signal)
    }, { address: config.http.address, public: config.http.public })
    try {
      await http.start()
      this.http = http
    } catch (err) {
      if ((err as Error & { cause?: NodeJS.ErrnoException }).cause?.code !== 'EADDRINUSE') throw err
      this.components.logger.error({ address: config.http.address, err: (err as Error).message }, 'no monitoring listener: its address is in use ([http] address); serving without /metrics and /healthz')
    }
  }

  /**
   * Garbage collection in the daemon: the layers mounted now are roots, the chunk cache (the FUSE
   * manager's or ours) is collected with the blocks, and past `[ipfs] max_blocks_bytes` it runs
   * on its own (src/daemon/gc.ts).
   */
  private collectWith (mounted: MountedLayers): void {
    const repo = this.repo as OpenRepo
    repo.collector.setRoots(async () => mounted.cids())
    repo.collector.setChunkCollector(async ({ dryRun, signal }) => {
      if (this.managerClient != null) return await this.managerClient.gc({ dryRun }, signal)
      const layers = (this.mounts?.list() ?? []).map(mp => this.mounts?.get(mp)?.fs).filter(fs => fs != null)
      return this.cache != null ? await sweepUnreferencedChunks(this.cache, layers, { dryRun }) : { entries: 0, bytes: 0, keptEntries: 0, keptBytes: 0 }
    })
    this.autoGc = new AutoGc({ repo, logger: this.components.logger }, { maxBlocksBytes: this.config.ipfs.maxBlocksBytes, intervalMs: this.config.ipfs.gcIntervalSec * 1000 })
    this.autoGc.start()
  }

  /** The automatic collection, when `[ipfs] max_blocks_bytes` is set. */
  get autoCollector (): AutoGc | undefined {
    return this.autoGc
  }

  /**
   * If the FUSE manager dies (killed, OOM), its mounts are gone and containers on them are lost;
   * what we can do is start a new one and mount the remote snapshots again, so new containers
   * and the snapshots' Usage/Mounts work again instead of answering Unavailable forever.
   */
  private superviseFuseManager (snapshotter: Snapshotter): void {
    const { config } = this
    const log = this.components.logger
    let busy = false
    const check = async (): Promise<void> => {
      const client = this.managerClient
      if (client == null || busy || this.stopping != null) return
      busy = true
      try {
        try {
          await client.health(AbortSignal.timeout(config.fuseManager.healthCheckTimeoutSec * 1000))
          return
        } catch (err) {
          if (!(err instanceof FuseManagerUnavailableError)) {
            log.warn({ err: (err as Error).message }, 'the FUSE manager did not answer a health check')
            return
          }
        }
        log.error('the FUSE manager is gone: starting a new one and mounting the remote snapshots again')
        const { client: fresh } = await ensureFuseManager(this.fuseManagerOptions(), log)
        await fresh.attach({ blobSocket: apiAddressFor(config) })
        await snapshotter.recoverRemote()
      } catch (err) {
        log.error({ err: (err as Error).message }, 'recovering the FUSE manager failed; retrying')
      } finally {
        busy = false
      }
    }
    this.supervisor = setInterval(() => { void check() }, config.fuseManager.healthCheckIntervalSec * 1000)
    this.supervisor.unref()
  }

  private fuseManagerOptions (): EnsureOptions {
    const { config } = this
    return {
      socket: fuseManagerAddressFor(config),
      root: config.root,
      logFile: join(config.root, 'fuse-manager.log'),
      logLevel: config.logLevel,
      diskCacheBytes: config.fs.diskCacheBytes,
      memoryCacheBytes: config.fs.memoryCacheBytes,
      client: { callTimeoutMs: config.fuseManager.callTimeoutSec * 1000, mountTimeoutMs: config.snapshotter.remoteMountTimeoutSec * 1000 }
    }
  }

  /** Static peers stay connected: dialled at start, redialled when the connection drops. */
  private keepPeersConnected (): void {
    const peers = this.config.ipfs.peers
    const node = this.repo?.node
    if (peers.length === 0 || node == null) return
    const log = this.components.logger
    const check = (): void => {
      const connected = new Set(node.helia.libp2p.getConnections().map(c => c.remotePeer.toString()))
      for (const p of peers) {
        const id = multiaddr(p).getComponents().find(c => c.name === 'p2p')?.value
        if (id != null && connected.has(id)) continue
        node.dial(p).catch((err: Error) => log.debug({ peer: p, err: err.message }, 'redial failed'))
      }
    }
    this.redial = setInterval(check, this.config.ipfs.redialIntervalSec * 1000)
    this.redial.unref()
  }

  /** Stops accepting calls, lets in-flight ones finish, unmounts, and keeps all state. */
  async stop (): Promise<void> {
    this.stopping ??= (async () => {
      if (this.redial != null) clearInterval(this.redial)
      this.autoGc?.stop()
      this.held?.stop()
      if (this.supervisor != null) clearInterval(this.supervisor)
      const steps: Array<[string, () => Promise<void> | undefined]> = [
        ['HTTP listener', () => this.http?.stop()],
        ['mirror', () => this.mirror?.stop()],
        ['snapshotter', () => this.server?.stop()],
        ['control API', () => this.control?.stop()],
        ['blob API', () => this.blobs?.close()],
        ['mounts', () => this.mounts?.stop()],
        ['chunk cache', () => this.cache?.stop()],
        ['learned prefetch', () => this.learned?.stop()],
        ['repo', () => this.repo?.close()]
      ]
      for (const [what, step] of steps) {
        try {
          await step()
        } catch (err) {
          this.components.logger.error({ err: (err as Error).message }, `stopping the ${what} failed`)
        }
      }
    })()
    await this.stopping
  }
}

/** The mirror listener's options from `[mirror]` (seconds to ms). */
export function mirrorOptions (config: DaemonConfig): ConstructorParameters<typeof MirrorServer>[1] {
  const m = config.mirror
  return {
    address: m.address,
    public: m.public,
    tlsCert: m.tlsCert,
    tlsKey: m.tlsKey,
    credentials: m.credentials,
    maxStreams: m.maxStreams,
    maxConnections: m.maxConnections,
    headersTimeoutMs: m.headersTimeoutSec * 1000,
    requestTimeoutMs: m.requestTimeoutSec * 1000,
    idleTimeoutMs: m.idleTimeoutSec * 1000,
    keepAliveTimeoutMs: m.keepAliveTimeoutSec * 1000,
    blockTimeoutMs: m.blockTimeoutSec * 1000
  }
}
