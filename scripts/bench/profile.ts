/**
 * CPU profiles of a benchmark's daemons and FUSE managers (`--profile DIR` of the start-up and
 * peer-read benches): `profileEnv` preloads profile-preload.cjs into the processes started with
 * it, `startProfiling` starts their profiles (SIGUSR2); each is written to DIR at its exit.
 */
import { join, resolve } from 'node:path'

/** Options for startDaemon: the preload and where it writes; none without a directory. */
export function profileEnv (dir: string | undefined): { env?: Record<string, string> } {
  if (dir == null) return {}
  return { env: { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require ${join(import.meta.dirname, 'profile-preload.cjs')}`, IPFS_ESTARGZ_PROFILE_DIR: resolve(dir) } }
}

/** Starts the profiles of processes started with `profileEnv`. */
export function startProfiling (pids: Array<number | undefined>): void {
  for (const pid of pids) if (pid != null) process.kill(pid, 'SIGUSR2')
}
