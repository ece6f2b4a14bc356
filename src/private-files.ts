import { isMainThread } from 'node:worker_threads'

/**
 * Modes of what we write under a repo or the daemon root: the node's key, the block and chunk
 * stores (decompressed image files among them) and the databases are for their owner only.
 */
export const PRIVATE = {
  /** Process umask of every process that writes a repo: third-party stores write with default modes. */
  umask: 0o077,
  dirMode: 0o700,
  fileMode: 0o600
} as const

/**
 * From now on, files and folders this process creates are private to its user, whatever umask
 * it was started with. A process-wide setting on purpose: blockstore-fs, datastore-fs and SQLite
 * create files with default modes we cannot pass. Whatever must stay more open (sockets, the
 * snapshots' `fs` dirs) is chmod'ed explicitly. Worker threads cannot change the umask; they
 * inherit their process's.
 */
export function usePrivateUmask (): void {
  if (isMainThread) process.umask(PRIVATE.umask)
}
