import { loadOrCreateSelfKey } from '@libp2p/config'
import type { Libp2p, ServiceMap } from '@libp2p/interface'
import { createLibp2p, type Libp2pOptions } from 'libp2p'
import type { HeliaWithLibp2p } from '@helia/libp2p'
import type { Helia, HeliaMixin, Router } from '@helia/interface'

/**
 * Gives a light Helia node a libp2p instance built from exactly `options`, created and started
 * with Helia (the peer key is loaded from, or created in, Helia's datastore, so the peer id
 * survives restarts).
 *
 * Why not `withLibp2pLight` from `@helia/libp2p`: importing that package also loads its default
 * configuration module, and with it every transport and service it can enable (DHT, WebRTC,
 * WebSockets, AutoTLS with an ACME client, UPnP, mDNS, ...): +57 MB RSS in every process that
 * starts a node, for code we never run. This file imports only `libp2p` itself.
 */
export function withLibp2p<S extends ServiceMap> (helia: Helia, options: Libp2pOptions<S>): HeliaWithLibp2p<S> {
  let libp2p: Libp2p<S> | undefined
  Object.defineProperty(helia, 'libp2p', {
    configurable: true,
    enumerable: true,
    get () {
      if (libp2p == null) throw Object.assign(new Error('libp2p is created when the Helia node starts'), { name: 'NotStartedError', code: 'ERR_NOT_STARTED' })
      return libp2p
    }
  })
  const mixin: HeliaMixin = {
    name: 'libp2p',
    start: async (h) => {
      if (libp2p == null) {
        libp2p = await createLibp2p({
          ...options,
          privateKey: options.privateKey ?? await loadOrCreateSelfKey(h.datastore),
          datastore: options.datastore ?? h.datastore,
          nodeInfo: { name: h.info.name, version: h.info.version, ...options.nodeInfo }
        })
      }
      if (!h.hasRouter(CONNECTED_PEERS)) h.addRouter(connectedPeersRouter)
      await libp2p.start()
    },
    stop: async () => {
      await libp2p?.stop()
    }
  }
  helia.addMixin(mixin)
  return helia as HeliaWithLibp2p<S>
}

const CONNECTED_PEERS = 'connected-peers'

/**
 * Content routing for a node without a DHT: there is nobody to ask. Bitswap already sends its
 * wants to every connected peer (the static ones, kept connected by the daemon), which is where
 * the blocks are; this router only makes that explicit instead of leaving Helia with none.
 */
const connectedPeersRouter: Router = {
  name: CONNECTED_PEERS,
  async * findProviders () {}
}
