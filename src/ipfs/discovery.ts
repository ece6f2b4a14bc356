import { setMaxListeners } from 'node:events'
import type { Libp2p, PeerId, PeerInfo } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'
import type { Logger } from '../logging.js'
import { InvalidOptionError } from './errors.js'
import { anyOf, deadline } from '../signals.js'

/** Discovery defaults, in one place (the daemon's `[ipfs]` settings map onto them). */
export const DEFAULTS = {
  /** Peers dialled at start and kept in the peer store as bootstrap peers (libp2p redials them). */
  bootstrap: [] as string[],
  /**
   * Multicast DNS on the LAN: off. It announces the node to everyone on the link, and the pod
   * networks of most Kubernetes clusters (and cloud VPCs) carry no multicast anyway.
   */
  mdns: false,
  /** Seconds between mDNS queries. */
  mdnsIntervalSec: 10,
  /** Our own mDNS service name: only ipfs-estargz nodes answer, not every libp2p node on the LAN. */
  mdnsServiceTag: '_ipfs-estargz._udp.local',
  /**
   * The Kademlia DHT on `/ipfs/lan/kad/1.0.0` (private addresses only, never the public IPFS
   * DHT): off. A node that listens serves it, one that does not is a client only.
   */
  dht: false,
  /** Peers found by discovery (mDNS, the DHT's providers) are dialled while fewer than this many are connected. */
  maxPeers: 64,
  /** A provider lookup before a mount's first read ends after this many ms, found or not. */
  lookupTimeoutMs: 5_000,
  /**
   * A lookup that ends empty before its timeout is asked again after this long: a DHT query
   * ends at once while the routing table is (momentarily) empty, e.g. right after a reconnect.
   */
  lookupRetryMs: 250,
  /** Providers dialled per lookup at most. */
  maxProviders: 8,
  /** A dial to a discovered peer fails after this many ms. */
  dialTimeoutMs: 5_000
}

export type DiscoveryOptions = Partial<typeof DEFAULTS>

/** Counters since start. */
export interface DiscoveryStats {
  /** Peers discovered (mDNS, bootstrap) and dialled because of it, and dials that failed. */
  discovered: number
  discoveryDials: number
  discoveryDialFailures: number
  /** CIDs announced as provided in the DHT, and announcements that failed. */
  provided: number
  provideFailures: number
  /** Provider lookups, those that found nobody (or failed), and providers dialled. */
  lookups: number
  lookupMisses: number
  providersDialled: number
}

type DiscoveryLibp2p = Pick<Libp2p, 'peerId' | 'dial' | 'getConnections' | 'contentRouting' | 'addEventListener' | 'removeEventListener'>

/**
 * Finding the other nodes of the cluster. libp2p itself dials the bootstrap list and runs mDNS
 * and the DHT (configured in src/ipfs/node.ts); this dials the peers mDNS finds (libp2p finds
 * them but no longer dials on its own), announces the CIDs of the images this node holds in the
 * DHT (`provide`), and before a mount's first read looks up and dials who provides its CIDs
 * (`connectProviders`). Without the DHT, `provide` and `connectProviders` do nothing: connected
 * peers are asked for every block anyway (src/ipfs/block-exchange.ts).
 */
export class Discovery {
  private readonly log: Logger
  private readonly opts: typeof DEFAULTS
  private readonly provided = new Set<string>()
  private readonly counts: DiscoveryStats = { discovered: 0, discoveryDials: 0, discoveryDialFailures: 0, provided: 0, provideFailures: 0, lookups: 0, lookupMisses: 0, providersDialled: 0 }
  private readonly stopController = new AbortController()
  private readonly onDiscovery = (evt: CustomEvent<PeerInfo>): void => { this.discovered(evt.detail) }
  private started = false

  constructor (private readonly components: { libp2p: DiscoveryLibp2p, logger: Logger }, options: DiscoveryOptions = {}) {
    this.opts = { ...DEFAULTS, ...options }
    for (const k of ['mdnsIntervalSec', 'maxPeers', 'lookupTimeoutMs', 'lookupRetryMs', 'maxProviders', 'dialTimeoutMs'] as const) {
      const v = this.opts[k]
      if (!Number.isInteger(v) || v < 1) throw new InvalidOptionError(`discovery: ${k} must be a positive integer, got ${String(v)}`)
    }
    this.log = components.logger.child({ component: 'discovery' })
    setMaxListeners(Infinity, this.stopController.signal)
  }

  get dhtEnabled (): boolean {
    return this.opts.dht
  }

  start (): void {
    if (this.started) return
    this.started = true
    this.components.libp2p.addEventListener('peer:discovery', this.onDiscovery)
  }

  stop (): void {
    if (!this.started) return
    this.started = false
    this.components.libp2p.removeEventListener('peer:discovery', this.onDiscovery)
    this.stopController.abort()
  }

  stats (): DiscoveryStats {
    return { ...this.counts }
  }

  /** A peer mDNS (or the bootstrap list) found: dialled unless connected or we have enough peers. */
  private discovered (peer: PeerInfo): void {
    this.counts.discovered++
    if (!this.started || peer.id.equals(this.components.libp2p.peerId)) return
    void this.dialPeer(peer.id, 'discovery')
  }

  private async dialPeer (peer: PeerId, why: 'discovery' | 'provider'): Promise<boolean> {
    const conns = this.components.libp2p.getConnections()
    if (conns.some(c => c.remotePeer.equals(peer))) return true
    if (conns.length >= this.opts.maxPeers) return false
    if (why === 'discovery') this.counts.discoveryDials++
    const d = deadline(this.opts.dialTimeoutMs, this.stopController.signal)
    try {
      await this.components.libp2p.dial(peer, { signal: d.signal })
      if (why === 'provider') this.counts.providersDialled++
      this.log.debug({ peer: peer.toString(), why }, 'connected to a discovered peer')
      return true
    } catch (err) {
      if (why === 'discovery') this.counts.discoveryDialFailures++
      this.log.debug({ peer: peer.toString(), why, err: (err as Error).message }, 'cannot connect to a discovered peer')
      return false
    } finally {
      d.clear()
    }
  }

  /**
   * Announces in the DHT that this node holds these CIDs (an image's root, its layers), each once
   * per run (the DHT republishes its own records). Returns when all were tried; failures (no DHT
   * peer yet) are logged and counted, and the CID is tried again on the next call.
   */
  async provide (cids: CID[]): Promise<void> {
    if (!this.opts.dht || !this.started) return
    await Promise.all(cids.map(async (cid) => {
      const key = cid.toString()
      if (this.provided.has(key)) return
      this.provided.add(key)
      try {
        await this.components.libp2p.contentRouting.provide(cid, { signal: this.stopController.signal })
        this.counts.provided++
      } catch (err) {
        this.provided.delete(key)
        this.counts.provideFailures++
        this.log.warn({ cid: key, err: (err as Error).message }, 'cannot announce a CID in the DHT')
      }
    }))
  }

  /**
   * Looks up who provides `cid` and dials them (at most `maxProviders`), within `lookupTimeoutMs`
   * (or `signal`). Finding nobody is a logged, counted warning, not an error: the peers already
   * connected, or the origin, may still have the blocks. Resolves to the providers connected.
   */
  async connectProviders (cid: CID, options: { signal?: AbortSignal } = {}): Promise<number> {
    if (!this.opts.dht || !this.started) return 0
    this.counts.lookups++
    const parents = options.signal != null ? anyOf([this.stopController.signal, options.signal]) : undefined
    const lookup = deadline(this.opts.lookupTimeoutMs, parents?.signal ?? this.stopController.signal)
    const signal = lookup.signal
    setMaxListeners(Infinity, signal)
    const self = this.components.libp2p.peerId
    const dials: Array<Promise<boolean>> = []
    const seen = new Set<string>()
    while (!signal.aborted) {
      try {
        for await (const p of this.components.libp2p.contentRouting.findProviders(cid, { signal })) {
          if (p.id.equals(self) || seen.has(p.id.toString())) continue
          seen.add(p.id.toString())
          dials.push(this.dialPeer(p.id, 'provider'))
          if (seen.size >= this.opts.maxProviders) break
        }
      } catch (err) {
        if (seen.size === 0 && options.signal?.aborted !== true) this.log.debug({ cid: cid.toString(), err: (err as Error).message }, 'provider lookup ended')
      }
      if (seen.size > 0) break
      await new Promise<void>(resolve => {
        const t = setTimeout(done, this.opts.lookupRetryMs)
        function done (): void { clearTimeout(t); signal.removeEventListener('abort', done); resolve() }
        signal.addEventListener('abort', done, { once: true })
      })
    }
    lookup.clear()
    parents?.clear()
    const connected = (await Promise.all(dials)).filter(Boolean).length
    if (connected === 0) {
      this.counts.lookupMisses++
      this.log.warn({ cid: cid.toString(), found: seen.size }, 'no provider of this CID could be found and connected; reading from the peers already connected')
    } else {
      this.log.info({ cid: cid.toString(), connected }, 'connected to providers')
    }
    return connected
  }
}
