import { readFile } from 'node:fs/promises'
import { parse as parseToml } from 'smol-toml'
import { DEFAULTS as FS_DEFAULTS } from '../fs/index.js'
import { CLIENT_DEFAULTS as FUSE_MANAGER_CLIENT_DEFAULTS } from '../fusemgr/index.js'
import { PREFETCH_DEFAULTS, PROTOCOL_DEFAULTS, RECORD_DEFAULTS, RECORDER_DEFAULTS } from '../prefetch-record/defaults.js'
import { DEFAULTS as MIRROR_DEFAULTS } from '../mirror/defaults.js'
import { DEFAULTS as READAHEAD_DEFAULTS } from '../source/readahead.js'
import { ConfigConflictError, ConfigError } from './errors.js'
import { DEFAULTS as GC_DEFAULTS } from './gc-defaults.js'
import { HTTP_DEFAULTS } from './http-defaults.js'

/**
 * Every setting of the daemon with its default, in one place (docs/configuration.md lists them).
 * The TOML file uses these names in snake_case; command-line flags override the file.
 */
export const DEFAULTS = {
  /** The daemon's state and repo: blocks, datastore, index, snapshots, chunk cache. */
  root: '/var/lib/ipfs-estargz',
  /** containerd's proxy plugin connects here. */
  address: '/run/ipfs-estargz/snapshotter.sock',
  /**
   * CLI commands given this root as `--repo` go through this socket while the daemon runs.
   * Empty: `api.sock` next to the snapshotter socket (`/run/ipfs-estargz/api.sock` by default).
   */
  apiAddress: '',
  config: '/etc/ipfs-estargz/config.toml',
  logLevel: 'info',
  ipfs: {
    /** Multiaddrs to listen on for peers (none: this node only fetches). */
    listen: [] as string[],
    /** Peers kept connected and redialled. */
    peers: [] as string[],
    /** Seconds between redials of a lost static peer. */
    redialIntervalSec: 5,
    /**
     * Trustless-gateway base URLs asked, in order, after bitswap (the last stage of the fetch
     * path, docs/ipfs.md). None: blocks come from peers only.
     */
    gateways: [] as string[],
    /**
     * New inbound connections accepted per second from one host (more are refused at once). The
     * same as ipfs's NODE_DEFAULTS, written out: this file is loaded by the FUSE manager, which
     * must not load Helia.
     */
    inboundConnectionsPerSec: 5,
    /**
     * A private swarm's key (`ipfs-estargz swarm key generate > swarm.key`, mode 0600): only
     * nodes with the same key can connect. Empty: no private swarm. A key file that cannot be
     * read, is malformed, or that others may access stops the daemon at start.
     */
    swarmKeyFile: '',
    /** Peers dialled at start (multiaddrs with /p2p/), as a bootstrap list: the DHT starts from them. */
    bootstrap: [] as string[],
    /** Find peers on the LAN by multicast DNS (off: it announces the node to the link, and most pod networks carry no multicast). */
    mdns: false,
    /** Seconds between mDNS queries. */
    mdnsIntervalSec: 10,
    /**
     * The Kademlia DHT in LAN mode (`/ipfs/lan/kad/1.0.0`, private addresses only): the node
     * announces the images it holds and looks up who holds an image before mounting it.
     */
    dht: false,
    /** A provider lookup before a layer's first read gives up after this many seconds (then reads from the peers connected). */
    lookupTimeoutSec: 5,
    /** Discovered peers are dialled while fewer than this many peers are connected. */
    maxPeers: 64,
    /** Seconds between announcements in the DHT of images not yet announced (a failed one is tried again). */
    provideIntervalSec: 60,
    /**
     * Cap of the blockstore in bytes (0: none). Past it the daemon collects garbage on its own,
     * least recently used unpinned blocks first, down to 90 % of it; pinned blocks and those of
     * mounted layers and of commands under way are never evicted (docs/operations.md).
     */
    maxBlocksBytes: GC_DEFAULTS.maxBlocksBytes as number,
    /** Seconds between checks of the blockstore against `max_blocks_bytes`. */
    gcIntervalSec: GC_DEFAULTS.gcIntervalSec as number,
    /**
     * `image inspect` and `mount` of an image whose index, manifest and config have not arrived
     * after this many seconds fail with "no peer has CID …" (no peer connected has it, or none
     * can be reached) instead of waiting forever. Their `--timeout` / `--open-timeout` override it.
     */
    findTimeoutSec: 60,
    /**
     * The blockstore of a repo that has none yet: 'pack' (blocks appended to pack files, an LMDB
     * index), 'lmdb' (blocks in one LMDB file) or 'fs' (blockstore-fs, a file per block). A repo
     * keeps the store it has (docs/ipfs.md#the-blockstore). The same as ipfs's default, written out.
     */
    blockstore: 'pack',
    /**
     * Hash every block the pack store reads against its CID. false: only its first read in the
     * daemon's run (bytes verified in a pack are not hashed again; packs are written once and
     * private to the repo's owner), as kubo's `HashOnRead` is off by default (docs/security.md).
     */
    verifyEveryRead: false
  },
  fs: {
    prefetchTimeoutSec: FS_DEFAULTS.prefetchTimeoutMs / 1000,
    /**
     * A layer's mount waits for its prioritized files (before `.prefetch.landmark`). false, as
     * the reference: a pull's mounts answer once their TOC is read and prefetch side by side; the
     * container's snapshot, stacked on them, waits for them (up to `prefetch_timeout_sec`).
     */
    waitForPrefetchAtMount: FS_DEFAULTS.waitForPrefetchAtMount,
    backgroundFetch: FS_DEFAULTS.backgroundFetch,
    fetchTimeoutSec: FS_DEFAULTS.fetchTimeoutMs / 1000,
    /** A small read that misses fetches this much of the layer ahead (0: exactly what is read). */
    readaheadBytes: READAHEAD_DEFAULTS.windowBytes,
    /** A read first verifies every chunk of the aligned window of this size around it, so a bad chunk fails the window with EIO instead of a short read (0: off). */
    readWindowBytes: FS_DEFAULTS.readWindowBytes,
    /** A read that misses also fetches the next chunks in blob order up to this many compressed bytes (0: off). */
    neighbourBytes: FS_DEFAULTS.neighbourBytes,
    diskCacheBytes: FS_DEFAULTS.diskCacheBytes,
    memoryCacheBytes: FS_DEFAULTS.memoryCacheBytes,
    /** Mount layers whose TOC digest is unknown (chunks are still checked against that TOC). */
    allowNoVerification: false
  },
  fuseManager: {
    /**
     * Serve the lazy mounts from a separate, detached process (`ipfs-estargz fuse-manager`) that
     * outlives the daemon, so running containers keep working across a daemon restart or crash.
     * false: the mounts live in the daemon and die with it.
     */
    enable: true,
    /** Its API socket. Empty: `fuse-manager.sock` in the root. */
    address: '',
    /** Seconds between health checks; a manager found dead is started again and the remote snapshots mounted again. */
    healthCheckIntervalSec: 5,
    /** A health check not answered within this many seconds counts as failed (the manager is not restarted for it). */
    healthCheckTimeoutSec: 5,
    /**
     * Every call to the manager but a mount (bounded by `[snapshotter] remote_mount_timeout_sec`)
     * fails after this many seconds: unmount, check, the mount list, attach. An unmount waits
     * for a mount in progress there to be cancelled, up to `[fs] prefetch_timeout_sec` and an unmount.
     */
    callTimeoutSec: FUSE_MANAGER_CLIENT_DEFAULTS.callTimeoutMs / 1000
  },
  prefetch: {
    /**
     * Learned prefetch (docs/learned-prefetch.md): record the order in which each layer is first
     * read, share it with peers, and prefetch a layer in a peer's recorded order when it is
     * pulled or mounted. false: none of it (no recording, no protocol, no asking).
     */
    enable: true,
    /** A layer's first reads are recorded for this long after its first read; then the record is published. */
    recordWindowSec: RECORDER_DEFAULTS.windowMs / 1000,
    /** Ranges one record holds at most (a full record is published at once). */
    maxRanges: RECORD_DEFAULTS.maxRanges,
    /** A record with fewer ranges is not published when its window ends (a pull alone reads about two). */
    minRanges: RECORDER_DEFAULTS.minRanges,
    /** Bytes one record may cover, recorded or accepted. */
    maxBytes: RECORD_DEFAULTS.maxPrefetchBytes,
    /** Peers are asked for a layer's record for at most this long. */
    askTimeoutSec: PROTOCOL_DEFAULTS.askTimeoutMs / 1000,
    /** Pieces of a record prefetched at once (each at most 1 MiB), always behind on-demand reads. */
    concurrency: PREFETCH_DEFAULTS.concurrency
  },
  mirror: {
    /**
     * Mirror mode (docs/mirror.md): serve the repo's images over the OCI Distribution read API
     * and its blocks as a trustless gateway, on an HTTP listener (`daemon --mirror` sets it too).
     */
    enable: false,
    /** HOST:PORT to listen on; a non-loopback address needs `public = true`. */
    address: MIRROR_DEFAULTS.address as string,
    /** Allow a non-loopback address (then consider TLS and credentials). */
    public: MIRROR_DEFAULTS.public as boolean,
    /** PEM certificate and key files; both set: HTTPS only. */
    tlsCert: '',
    tlsKey: '',
    /** File of `USER:$scrypt$SALT$KEY` lines (`ipfs-estargz mirror passwd USER`); set: basic auth on every request. */
    credentials: '',
    /** Requests served at once; more are answered 429 at once. */
    maxStreams: MIRROR_DEFAULTS.maxStreams as number,
    /** Open connections at most. */
    maxConnections: MIRROR_DEFAULTS.maxConnections as number,
    /** Seconds to receive a request's headers, and the whole request. */
    headersTimeoutSec: MIRROR_DEFAULTS.headersTimeoutMs / 1000,
    requestTimeoutSec: MIRROR_DEFAULTS.requestTimeoutMs / 1000,
    /** Seconds a connection may carry no traffic (a stalled client is cut). */
    idleTimeoutSec: MIRROR_DEFAULTS.idleTimeoutMs / 1000,
    /** Seconds an idle keep-alive connection is kept. */
    keepAliveTimeoutSec: MIRROR_DEFAULTS.keepAliveTimeoutMs / 1000,
    /** Seconds one block may take through the fetch path while the registry API streams a blob. */
    blockTimeoutSec: MIRROR_DEFAULTS.blockTimeoutMs / 1000
  },
  http: {
    /**
     * HOST:PORT of the monitoring listener: `GET /metrics` (Prometheus) and `GET /healthz`.
     * Empty: no listener. A non-loopback address needs `public = true`.
     */
    address: HTTP_DEFAULTS.address as string,
    /** Allow a non-loopback address (the metrics name the layers, mounts and peers). */
    public: HTTP_DEFAULTS.public as boolean
  },
  snapshotter: {
    /** Start even when a remote snapshot cannot be mounted again (it answers Unavailable). */
    allowInvalidMountsOnRestart: false,
    /** A lazy mount slower than this falls back to a normal snapshot. */
    remoteMountTimeoutSec: 60
  }
}

export type DaemonConfig = typeof DEFAULTS

const camel = (s: string): string => s.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase())

/** Merges a parsed TOML table into defaults, refusing unknown keys and wrong types. */
function merge<T extends Record<string, unknown>> (base: T, table: Record<string, unknown>, where: string): T {
  const out: Record<string, unknown> = { ...base }
  for (const [rawKey, value] of Object.entries(table)) {
    const key = camel(rawKey)
    if (!(key in base)) throw new ConfigError(`${where}: unknown setting ${JSON.stringify(rawKey)}`)
    const def = base[key]
    if (def != null && typeof def === 'object' && !Array.isArray(def)) {
      if (typeof value !== 'object' || value == null || Array.isArray(value)) throw new ConfigError(`${where}: [${rawKey}] must be a table`)
      out[key] = merge(def as Record<string, unknown>, value as Record<string, unknown>, `${where} [${rawKey}]`)
    } else if (Array.isArray(def)) {
      if (!Array.isArray(value) || value.some(v => typeof v !== 'string')) throw new ConfigError(`${where}: ${rawKey} must be a list of strings`)
      out[key] = value
    } else if (typeof value !== typeof def) {
      throw new ConfigError(`${where}: ${rawKey} must be a ${typeof def}, got ${JSON.stringify(value)}`)
    } else {
      out[key] = value
    }
  }
  return out as T
}

/** Reads the TOML file (a missing default file is fine; a missing explicit one is not). */
export async function loadConfig (file: string | undefined): Promise<DaemonConfig> {
  const path = file ?? DEFAULTS.config
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    // Node's errno: no config file at the default path is no config
    if (file == null && (err as NodeJS.ErrnoException).code === 'ENOENT') return structuredClone(DEFAULTS)
    throw new ConfigError(`cannot read config ${path}: ${(err as Error).message}`)
  }
  let table: Record<string, unknown>
  try {
    table = parseToml(text) as Record<string, unknown>
  } catch (err) {
    throw new ConfigError(`${path}: ${(err as Error).message.split('\n')[0]}`)
  }
  const config = merge(structuredClone(DEFAULTS), table, path)
  checkConfig(config, path)
  return config
}

/**
 * Refuses settings that cannot go together (ConfigConflictError). With the FUSE manager, the
 * snapshotter's check of a lazy layer is one call to it that waits up to `[fs]
 * prefetch_timeout_sec` for the layer's prioritized files: a `call_timeout_sec` not above that
 * would fail the check of every layer still prefetching (the container's snapshot answers
 * Unavailable).
 */
export function checkConfig (config: DaemonConfig, where = 'config'): void {
  const call = config.fuseManager.callTimeoutSec
  const prefetch = config.fs.prefetchTimeoutSec
  if (config.fuseManager.enable && !(call > prefetch)) {
    throw new ConfigConflictError(`${where}: [fuse_manager] call_timeout_sec (${call}) must be greater than [fs] prefetch_timeout_sec (${prefetch}): a check of a lazy layer waits up to prefetch_timeout_sec inside one call to the FUSE manager`)
  }
}
