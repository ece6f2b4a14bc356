import { RepoMismatchError, openRepo, resolveRepoPath, type NodeOptions, type OpenRepo } from '../ipfs/index.js'
import type { Logger } from '../logging.js'
import { commandContext } from './context.js'

/**
 * The repo a command works on (`--repo`, else `$IPFS_ESTARGZ_PATH`, else `~/.ipfs-estargz`).
 * Inside the daemon it is the daemon's open repo, which the command must not close; otherwise
 * the command opens it with a node that listens nowhere unless asked: a CLI command must not
 * open ports. Creating (or tightening) the repo makes this process's umask 077: whatever the
 * command writes from then on is private.
 */
export async function openCommandRepo (flag: string | undefined, logger: Logger, options: Omit<NodeOptions, 'repo' | 'logger'> = {}): Promise<OpenRepo> {
  const path = resolveRepoPath(flag)
  const daemonRepo = commandContext.getStore()?.repo
  if (daemonRepo != null) {
    if (daemonRepo.path !== path) throw new RepoMismatchError(daemonRepo.path, path)
    // the daemon keeps its repo open; a lease keeps the blocks the command writes or reads from
    // a collection running meanwhile (a push pins its image only at its end)
    const lease = daemonRepo.collector.guard.lease()
    return { ...daemonRepo, close: async () => { lease.release() } }
  }
  return await openRepo({ logger }, { ...options, repo: path })
}
