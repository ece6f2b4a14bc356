import { readdir } from 'node:fs/promises'
import { RepoMismatchError, openRepo, resolveRepoPath, type NodeOptions, type OpenRepo } from '../ipfs/index.js'
import type { Logger } from '../logging.js'
import { commandContext } from './context.js'
import { NoRepoError } from './errors.js'

/** Entries of which at least one is in every repo (a node started there once). */
const REPO_ENTRIES = ['datastore', 'blocks', 'index.sqlite']

/** Is there a repo at `path` (not merely a folder)? A folder we may not read is an error (EACCES), not a missing repo. */
export async function repoExists (path: string): Promise<boolean> {
  let names: string[]
  try {
    names = await readdir(path)
  } catch (err) {
    // Node's errno: nothing there, or a file where the folder should be
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') return false
    throw err
  }
  return names.some(n => REPO_ENTRIES.includes(n))
}

export interface CommandRepoOptions extends Omit<NodeOptions, 'repo' | 'logger'> {
  /**
   * The command writes to the repo (push, pull, import, mount): a missing repo is created. A
   * command that only reads fails with NoRepoError instead, so a typo in `--repo` creates nothing.
   */
  create?: boolean
}

/**
 * The repo a command works on (`--repo`, else `$IPFS_ESTARGZ_PATH`, else `~/.ipfs-estargz`).
 * Inside the daemon it is the daemon's open repo, which the command must not close; otherwise
 * the command opens it with a node that listens nowhere unless asked: a CLI command must not
 * open ports. Creating (or tightening) the repo makes this process's umask 077: whatever the
 * command writes from then on is private.
 */
export async function openCommandRepo (flag: string | undefined, logger: Logger, options: CommandRepoOptions = {}): Promise<OpenRepo> {
  const path = resolveRepoPath(flag)
  const daemonRepo = commandContext.getStore()?.repo
  if (daemonRepo != null) {
    if (daemonRepo.path !== path) throw new RepoMismatchError(daemonRepo.path, path)
    // the daemon keeps its repo open; a lease keeps the blocks the command writes or reads from
    // a collection running meanwhile (a push pins its image only at its end)
    const lease = daemonRepo.collector.guard.lease()
    return { ...daemonRepo, close: async () => { lease.release() } }
  }
  const { create, ...nodeOptions } = options
  if (create !== true && !await repoExists(path)) throw new NoRepoError(path)
  return await openRepo({ logger }, { ...nodeOptions, repo: path })
}
