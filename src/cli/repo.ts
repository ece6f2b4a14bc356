import { IndexStore, RepoMismatchError, createNode, resolveRepoPath, type IpfsNode } from '../ipfs/index.js'
import type { Logger } from '../logging.js'
import { commandContext } from './context.js'

/** The repo opened by a CLI command: the Helia node and the image/digest index. */
export interface OpenRepo {
  path: string
  node: IpfsNode
  index: IndexStore
  close: () => Promise<void>
}

/**
 * Opens the repo (`--repo`, else `$IPFS_ESTARGZ_PATH`, else `~/.ipfs-estargz`) with a node that
 * listens nowhere unless asked: a CLI command must not open ports. Creating (or tightening) the
 * repo makes this process's umask 077: whatever the command writes from then on is private.
 */
export async function openRepo (flag: string | undefined, logger: Logger, options: { listen?: string[], peers?: string[] } = {}): Promise<OpenRepo> {
  const path = resolveRepoPath(flag)
  const daemonRepo = commandContext.getStore()?.repo
  if (daemonRepo != null) {
    if (daemonRepo.path !== path) throw new RepoMismatchError(daemonRepo.path, path)
    return { ...daemonRepo, close: async () => {} } // the daemon keeps its repo open
  }
  const node = await createNode({ repo: path, logger, listen: options.listen, peers: options.peers })
  let index: IndexStore
  try {
    index = IndexStore.open(path, { pins: node.helia.pins, localBlockstore: node.localBlockstore, logger })
  } catch (err) {
    await node.stop()
    throw err
  }
  return {
    path,
    node,
    index,
    close: async () => {
      index.close()
      await node.stop()
    }
  }
}
