import type { Logger } from '../logging.js'
import { IndexStore } from './index-store.js'
import { createNode, type IpfsNode, type NodeOptions } from './node.js'

/** An open repo: the Helia node over it and its image/digest index. */
export interface OpenRepo {
  path: string
  node: IpfsNode
  index: IndexStore
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
  let index: IndexStore
  try {
    index = IndexStore.open(options.repo, { pins: node.helia.pins, localBlockstore: node.localBlockstore, logger })
  } catch (err) {
    await node.stop()
    throw err
  }
  return {
    path: options.repo,
    node,
    index,
    close: async () => {
      index.close()
      await node.stop()
    }
  }
}
