import { CID } from 'multiformats/cid'
import { readSwarmKey, type NodeOptions, type OpenRepo } from '../ipfs/index.js'
import type { Logger } from '../logging.js'
import type { DaemonConfig } from './config.js'

/**
 * The node's options from the `[ipfs]` settings (the daemon's, and `mount --config`'s): the
 * private swarm's key read and checked here, so a bad key file stops the start with its error.
 */
export async function nodeOptionsFor (ipfs: DaemonConfig['ipfs']): Promise<Omit<NodeOptions, 'repo' | 'logger'>> {
  return {
    listen: ipfs.listen,
    peers: ipfs.peers,
    gateways: ipfs.gateways,
    inboundConnectionsPerSec: ipfs.inboundConnectionsPerSec,
    blockstore: ipfs.blockstore as NonNullable<NodeOptions['blockstore']>,
    verifyEveryRead: ipfs.verifyEveryRead,
    ...(ipfs.swarmKeyFile !== '' ? { psk: await readSwarmKey(ipfs.swarmKeyFile) } : {}),
    discovery: {
      bootstrap: ipfs.bootstrap,
      mdns: ipfs.mdns,
      mdnsIntervalSec: ipfs.mdnsIntervalSec,
      dht: ipfs.dht,
      lookupTimeoutMs: ipfs.lookupTimeoutSec * 1000,
      maxPeers: ipfs.maxPeers
    }
  }
}

/**
 * Announces in the DHT what the repo holds: every image's root and every blob CID of the index
 * (layers, configs, manifests). Each CID once per run (src/ipfs/discovery.ts); called at start,
 * after each command (a push or pull adds images) and every `provideIntervalSec` (to retry
 * what failed while no DHT peer was connected). Nothing without the DHT.
 */
export class HeldImages {
  private timer?: NodeJS.Timeout
  private running?: Promise<void>

  constructor (private readonly components: { repo: OpenRepo, logger: Logger }, private readonly options: { intervalMs: number }) {}

  start (): void {
    if (!this.components.repo.node.discovery.dhtEnabled) return
    this.announce()
    this.timer = setInterval(() => { this.announce() }, this.options.intervalMs)
    this.timer.unref()
  }

  stop (): void {
    clearInterval(this.timer)
  }

  private readonly lookedUp = new Set<string>()

  /**
   * Before a layer's first read: looks up who provides it and connects to them (once per layer
   * and run, bounded by `[ipfs] lookup_timeout_sec`), and announces that this node holds it now.
   */
  async beforeFirstRead (cid: string, signal?: AbortSignal): Promise<void> {
    const { discovery } = this.components.repo.node
    if (!discovery.dhtEnabled || this.lookedUp.has(cid)) return
    this.lookedUp.add(cid)
    const parsed = CID.parse(cid)
    await discovery.connectProviders(parsed, { signal })
    void discovery.provide([parsed])
  }

  /** Starts an announcement round unless one runs; never throws. */
  announce (): void {
    const { repo, logger } = this.components
    if (!repo.node.discovery.dhtEnabled || this.running != null) return
    this.running = (async () => {
      try {
        const cids = [...repo.index.images.list().map(r => CID.parse(r.root)), ...repo.index.digests.cids()]
        await repo.node.discovery.provide(cids)
      } catch (err) {
        logger.warn({ err: (err as Error).message }, 'announcing the images held failed')
      }
    })().finally(() => { this.running = undefined })
  }
}
