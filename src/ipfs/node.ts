import { setMaxListeners } from 'node:events'
import { join } from 'node:path'
import { withBitswap } from '@helia/bitswap'
import { withLibp2pLight, type HeliaWithLibp2p } from '@helia/libp2p'
import { bootstrap } from '@libp2p/bootstrap'
import { identify } from '@libp2p/identify'
import { kadDHT, removePublicAddressesMapper } from '@libp2p/kad-dht'
import { mdns } from '@libp2p/mdns'
import { ping } from '@libp2p/ping'
import { noise } from '@libp2p/noise'
import { preSharedKey } from '@libp2p/pnet'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { BlockBroker, HeliaMixin } from '@helia/interface'
import { createHeliaLight } from 'helia'
import type { Logger } from '../logging.js'
import { BlockExchange, type BlockExchangeOptions } from './block-exchange.js'
import { collectBlock } from './dag-reader.js'
import { Discovery, DEFAULTS as DISCOVERY_DEFAULTS, type DiscoveryOptions } from './discovery.js'
import { BlockNotFoundError, InvalidOptionError } from './errors.js'
import { BlockFetcher, countingBlockstore, type FetchOptions, type FetcherOptions, type StageStats } from './fetcher.js'
import { GatewayClient, type GatewayOptions } from './gateway.js'
import { OpenLinks, type OpenLinksOptions } from './open-links.js'
import { lockRepo, prepareRepo, type RepoLock } from './repo.js'
import { createLocalBlockstore, type BlockstoreKind, type LocalBlockstore } from './local-blockstore.js'
import { RepoDatastore } from './stores.js'
import type { PeerId, ServiceMap } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'
import { deadline } from '../signals.js'

/** Node defaults, in one place. */
export const DEFAULTS = {
  /** Folder of the datastore (peer key, peer store, pins, our index) inside the repo. */
  datastoreDir: 'datastore',
  /** No listening unless asked: a CLI `push` must not open ports. */
  listen: [] as string[],
  /** Static peers dialled at start. */
  peers: [] as string[],
  /** Trustless gateways / mirrors, the last stage of the fetch path: none. */
  gateways: [] as string[],
  /** Bitswap tuning: short debounces, because a FUSE read waits on every block. */
  bitswap: { sendWantlistDebounce: 1 } satisfies BitswapOptions,
  /** Dial timeout for static peers (ms). */
  dialTimeout: 10_000,
  /**
   * New inbound connections accepted per second from one host (libp2p's limiter, whose own
   * default is also 5, set here so it is ours). Nodes behind one address (a NAT, or every test
   * node on loopback) share it.
   */
  inboundConnectionsPerSec: 5,
  /** The DHT's protocol: the LAN DHT's, never the public IPFS DHT (`/ipfs/kad/1.0.0`). */
  dhtProtocol: '/ipfs/lan/kad/1.0.0'
} as const

export interface NodeOptions {
  /** Repo folder (already resolved, see `resolveRepoPath`). */
  repo: string
  /** Multiaddrs to listen on, e.g. `/ip4/127.0.0.1/tcp/0`. None by default. */
  listen?: string[]
  /** Multiaddrs (with `/p2p/<id>`) to dial at start. Failures are logged, not fatal. */
  peers?: string[]
  /** Private swarm key (the `swarm.key` file's bytes, v1 format). */
  psk?: Uint8Array
  /** Bitswap options, merged over `DEFAULTS.bitswap`. */
  bitswap?: BitswapOptions
  /**
   * The `/ipfs-estargz/blocks/1.0.0` block exchange (src/ipfs/block-exchange.ts): options, or
   * `false` to neither serve nor use it (the node then speaks bitswap only). On by default.
   */
  exchange?: BlockExchangeOptions | false
  /**
   * Trustless-gateway base URLs (e.g. `https://gw.example`), asked in this order after bitswap
   * (`GET <url>/ipfs/<cid>?format=raw`). None by default.
   */
  gateways?: string[]
  gateway?: GatewayOptions
  /** When each stage of the fetch path starts (src/ipfs/fetcher.ts). */
  fetch?: FetcherOptions
  /** New inbound connections accepted per second from one host. */
  inboundConnectionsPerSec?: number
  /** Bootstrap list, mDNS, the LAN DHT and their limits (src/ipfs/discovery.ts): all off by default. */
  discovery?: DiscoveryOptions
  /** The blockstore of a repo that has none yet (src/ipfs/local-blockstore.ts): 'pack' by default. */
  blockstore?: BlockstoreKind
  /** Hash every block read from the pack store, not only its first read in this process (`PackBlockstore` `verifyEveryRead`). */
  verifyEveryRead?: boolean
  /** The links of open readers' DAGs, which the exchange may fetch on a peer's behalf (src/ipfs/open-links.ts). */
  links?: OpenLinksOptions
  logger: Logger
}

export type BitswapOptions = NonNullable<Parameters<typeof withBitswap>[1]>

/** What readers need of a blockstore: `get` (Helia's blockstore and `IpfsNode.blocks` fit). */
export interface BlockFetchPath {
  get: (cid: CID, options?: FetchOptions & { offline?: boolean }) => AsyncIterable<Uint8Array> | Iterable<Uint8Array>
  /**
   * Where a reader registers the links of the DAG it reads while it is open: the node may fetch
   * those blocks for a peer that asks (cooperative fetch, src/ipfs/block-exchange.ts).
   */
  links?: OpenLinks
}

export type HeliaNode = HeliaWithLibp2p<ServiceMap>

/**
 * A started Helia node over a persistent repo. `helia.blockstore.get` is the one fetch path:
 * the local blockstore, then our block exchange, bitswap, the gateways (src/ipfs/fetcher.ts);
 * `localBlockstore` never touches the network.
 */
export interface IpfsNode {
  readonly repo: string
  readonly helia: HeliaNode
  readonly localBlockstore: LocalBlockstore
  /**
   * Our block exchange (stage 2 of the fetch path, inside `helia.blockstore`); serves
   * `localBlockstore` to our peers. Not started when disabled: its `get` then answers undefined.
   */
  readonly exchange: BlockExchange
  /** Finding peers: mDNS dials, DHT provide and provider lookups (no-ops without the DHT). */
  readonly discovery: Discovery
  /**
   * The same fetch path as `helia.blockstore.get` (local blockstore, then the fetcher's stages),
   * without Helia's wrapping around it: Helia asks the store `has` before `get`, waits for its
   * own write of a fetched block and for every broker's announcement, about 1 ms a block on the
   * read path. A fetched block is announced (to bitswap peers wanting it) after it is returned.
   * Options: `signal`, `offline`, `fetchPriority`, and Helia's `onProgress` (the same
   * `blocks:get:blockstore:put` event for a block that came over the network).
   */
  readonly blocks: BlockFetchPath
  /** Blocks read through `helia.blockstore` since start, by stage (local, exchange, bitswap, gateway). */
  fetchStats: () => StageStats
  /** Resolves when every fetched block so far is written to the local blockstore. */
  flush: () => Promise<void>
  readonly peerId: PeerId
  /** Addresses others can dial (with `/p2p/<id>`). */
  multiaddrs: () => Multiaddr[]
  /** Connects to a peer; bitswap sends wants to connected peers. */
  dial: (addr: string | Multiaddr, signal?: AbortSignal) => Promise<void>
  /** Stops libp2p, closes the stores, releases the repo lock. Idempotent. */
  stop: () => Promise<void>
}

/**
 * Opens the repo and starts a light Helia node: TCP + noise + yamux + identify, with one block
 * broker, our `BlockFetcher` (exchange → bitswap → gateways); no public bootstrap, no mDNS, no
 * UPnP (Helia's full default config would reach the public network). The peer key lives in the
 * datastore, so the peer id survives restarts. The repo is private to its user: created 0700,
 * tightened if others can read it, written under a 077 umask (`prepareRepo`).
 */
export async function createNode (options: NodeOptions): Promise<IpfsNode> {
  const log = options.logger.child({ component: 'ipfs' })
  await prepareRepo(options.repo, log)
  const lock: RepoLock = await lockRepo(options.repo)
  let blockstore: LocalBlockstore
  try {
    blockstore = await createLocalBlockstore(options.repo, { kind: options.blockstore, pack: { verifyEveryRead: options.verifyEveryRead } }, log)
  } catch (err) {
    await lock.release()
    throw err
  }
  const datastore = new RepoDatastore(join(options.repo, DEFAULTS.datastoreDir))
  let helia: HeliaNode | undefined
  let exchange: BlockExchange | undefined
  let fetcher: BlockFetcher | undefined
  const disc = { ...DISCOVERY_DEFAULTS, ...options.discovery }
  const links = new OpenLinks(options.links)
  const wanted = (cid: CID): boolean => links.has(cid)
  const listen = [...(options.listen ?? DEFAULTS.listen)]
  try {
    const gateways = new GatewayClient({ logger: options.logger }, options.gateways ?? DEFAULTS.gateways, options.gateway)
    await blockstore.open()
    await datastore.open()
    helia = withLibp2pLight(createHeliaLight({ blockstore: countingBlockstore(blockstore, () => fetcher), datastore }), {
      addresses: { listen },
      transports: [tcp()],
      peerDiscovery: [
        ...(disc.bootstrap.length > 0 ? [bootstrap({ list: disc.bootstrap })] : []),
        ...(disc.mdns ? [mdns({ interval: disc.mdnsIntervalSec * 1000, serviceTag: disc.mdnsServiceTag })] : [])
      ],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      connectionManager: { inboundConnectionThreshold: options.inboundConnectionsPerSec ?? DEFAULTS.inboundConnectionsPerSec },
      ...(options.psk != null ? { connectionProtector: preSharedKey({ psk: options.psk }) } : {}),
      services: {
        identify: identify(),
        // LAN mode: only private addresses enter the routing table; a node that listens nowhere
        // cannot be asked, so it only asks (client mode). The DHT pings the oldest peer of a full
        // bucket before replacing it. (Optional services: typed loosely, libp2p's map is strict.)
        ...(disc.dht ? { ping: ping(), dht: kadDHT({ protocol: DEFAULTS.dhtProtocol, peerInfoMapper: removePublicAddressesMapper, clientMode: listen.length === 0 }) } as unknown as Record<string, never> : {})
      }
    })
    // Helia races all its block brokers at once; to ask in order, the bitswap broker must be a
    // stage of ours, not a broker of Helia's. withBitswap's mixin makes it: run it against a
    // view of the node that hands the broker to us instead of adding it.
    const bitswapMixin = captureMixin((shim) => withBitswap(shim, { ...DEFAULTS.bitswap, ...options.bitswap }))
    helia.addMixin({
      name: 'ipfs-estargz-fetch',
      start: async (h: HeliaNode) => {
        let bitswap: BlockBroker | undefined
        // What the mixin and bitswap read of the node (bitswap spreads it: own properties only).
        const view = {
          status: h.status,
          routing: h.routing,
          blockstore: h.blockstore,
          logger: h.logger,
          libp2p: h.libp2p,
          getHasher: h.getHasher,
          metrics: (h as { metrics?: unknown }).metrics,
          hasBlockBroker: () => false,
          addBlockBroker: (b: BlockBroker) => { bitswap = b }
        } as unknown as HeliaNode
        await bitswapMixin.start?.(view)
        if (bitswap == null) throw new InvalidOptionError('@helia/bitswap did not create its block broker')
        exchange = new BlockExchange({
          libp2p: h.libp2p,
          blockstore,
          inflight: (cid) => fetcher?.pending(cid),
          wanted,
          seeding: () => links.size === 0,
          fetchFor: async (cid, o) => await fetcher?.fetchFor(cid, o),
          logger: options.logger
        }, options.exchange === false ? {} : options.exchange)
        if (options.exchange !== false) await exchange.start()
        fetcher = new BlockFetcher({
          exchange,
          wanted,
          bitswap,
          gateways,
          store: blockstore,
          connections: () => h.libp2p.getConnections().length,
          bitswapOnlyPeers: () => {
            const asked = new Set((exchange?.isStarted() === true ? exchange.peers() : []).map(String))
            return new Set(h.libp2p.getConnections().map(c => c.remotePeer.toString()).filter(id => !asked.has(id))).size
          },
          logger: options.logger
        }, options.fetch)
        h.addBlockBroker(fetcher)
      }
    } satisfies HeliaMixin<HeliaNode>)
    await helia.start()
  } catch (err) {
    await exchange?.stop().catch(() => {})
    await helia?.stop().catch(() => {})
    await blockstore.close().catch(() => {})
    await datastore.close().catch(() => {})
    await lock.release()
    throw err
  }
  const h = helia
  const ex = exchange as unknown as BlockExchange
  const fe = fetcher as unknown as BlockFetcher
  const discovery = new Discovery({ libp2p: h.libp2p, logger: options.logger }, disc)
  discovery.start()
  log.info({ peerId: h.libp2p.peerId.toString(), repo: options.repo, listen: h.libp2p.getMultiaddrs().map(String) }, 'ipfs node started')

  const dial = async (addr: string | Multiaddr, signal?: AbortSignal): Promise<void> => {
    const ma = typeof addr === 'string' ? multiaddr(addr) : addr
    const d = deadline(DEFAULTS.dialTimeout, signal)
    setMaxListeners(Infinity, d.signal)
    try {
      await h.libp2p.dial(ma, { signal: d.signal })
    } finally {
      d.clear()
    }
  }
  await Promise.all((options.peers ?? DEFAULTS.peers).map(async (p) => {
    try {
      await dial(p)
      log.info({ peer: p }, 'connected to static peer')
    } catch (err) {
      log.warn({ peer: p, err: (err as Error).message }, 'cannot connect to static peer')
    }
  }))

  let stopping: Promise<void> | undefined
  return {
    repo: options.repo,
    helia: h,
    localBlockstore: blockstore,
    exchange: ex,
    discovery,
    blocks: {
      links,
      async * get (cid: CID, options: FetchOptions & { offline?: boolean } = {}): AsyncGenerator<Uint8Array> {
        let bytes: Uint8Array | undefined
        try {
          bytes = await collectBlock(blockstore.get(cid, options))
        } catch (err) {
          // a missing block: the blockstore's NotFoundError is interface-store's (ours in stores.ts copies it), known by name
          if ((err as Error).name !== 'NotFoundError') throw err
        }
        if (bytes != null) {
          fe.countLocal(bytes.length)
          yield bytes
          return
        }
        if (options.offline === true) throw new BlockNotFoundError(cid.toString(), 'the local blockstore (offline)')
        bytes = await fe.retrieve(cid, options)
        options.onProgress?.({ type: 'blocks:get:blockstore:put', detail: cid } as never)
        fe.announce(cid).catch((err: Error) => { log.debug({ cid: cid.toString(), err: err.message }, 'announcing a fetched block failed') })
        yield bytes
      }
    },
    fetchStats: () => fe.stats(),
    flush: async () => { await blockstore.flush() },
    peerId: h.libp2p.peerId,
    multiaddrs: () => h.libp2p.getMultiaddrs(),
    dial,
    stop: async () => {
      stopping ??= (async () => {
        try {
          discovery.stop()
          await ex.stop().catch(() => {})
          await h.stop()
        } finally {
          // Helia does not close stores it did not open; we opened them.
          await blockstore.close().catch(() => {})
          await datastore.close().catch(() => {})
          await lock.release()
          log.info('ipfs node stopped')
        }
      })()
      await stopping
    }
  }
}

/** The mixin a Helia extension (`withBitswap`) registers, without registering it. */
function captureMixin (extend: (helia: HeliaNode) => unknown): HeliaMixin<HeliaNode> {
  let mixin: HeliaMixin<HeliaNode> | undefined
  extend({ addMixin: (m: HeliaMixin<HeliaNode>) => { mixin = m } } as unknown as HeliaNode)
  if (mixin == null) throw new InvalidOptionError('the Helia extension registered no mixin')
  return mixin
}
