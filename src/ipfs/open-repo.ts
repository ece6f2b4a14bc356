import { CID } from 'multiformats/cid'
import type { Logger } from '../logging.js'
import { Collector, GcGuard, type GcBlockstore } from './gc.js'
import { IndexStore } from './index-store.js'
import { createNode, type IpfsNode, type NodeOptions } from './node.js'

/** An open repo: the Helia node over it and its image/digest index. */
export interface OpenRepo {
  path: string
  node: IpfsNode
  index: IndexStore
  /** Garbage collection, and the leases that keep work in progress from it (src/ipfs/gc.ts). */
  collector: Collector
  /** Closes the index, then stops the node. */
  close: () => Promise<void>
}

/**
 * Opens the repo at `options.repo` (already resolved, see `resolveRepoPath`): starts its node
 * and opens its index. The CLI (when no daemon owns the repo) and the daemon open it this way.
 * If the index cannot be opened, the node is stopped again before the error is thrown.
 */
export async function openRepo (components: { logger: Logger }, options: Omit<NodeOptions, 'logger'>): Promise<OpenRepo> {
  const { logger } = components
  const node = await createNode({ ...options, logger })
  // every path to the blockstore goes through the guard from here on
  const guard = new GcGuard()
  guard.instrument(node.localBlockstore)
  let index: IndexStore
  try {
    // an unpin may make blocks garbage: the guard counts it
    index = IndexStore.open(options.repo, { pins: node.helia.pins, localBlockstore: node.localBlockstore, logger, onUnpin: () => { guard.noteChange() } })
  } catch (err) {
    await node.stop()
    throw err
  }
  // a listed image's descriptor JSON (its other handle, docs/ipfs.md) is kept with it
  const listed = (): CID[] => index.images.list().flatMap(i => i.descriptor != null ? [CID.parse(i.descriptor)] : [])
  const collector = new Collector({ blockstore: node.localBlockstore as unknown as GcBlockstore, pins: index.pins, guard, logger, listed })
  return {
    path: options.repo,
    node,
    index,
    collector,
    close: async () => {
      index.close()
      await node.stop()
    }
  }
}
