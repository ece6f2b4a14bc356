import { mkdir, open, readFile, rm } from 'node:fs/promises'
import { homedir } from 'node:os'
import { join, resolve } from 'node:path'
import { RepoLockedError } from './errors.js'

/** Repo defaults: where the CLI's repo lives when nothing says otherwise. */
export const DEFAULTS = {
  /** Environment variable naming the repo (like Kubo's `IPFS_PATH`). */
  envVar: 'IPFS_ESTARGZ_PATH',
  /** Folder under the home directory. */
  dirName: '.ipfs-estargz',
  /** Lock file inside the repo. */
  lockFile: 'repo.lock'
} as const

/**
 * The one place the repo path is decided: `--repo` > `$IPFS_ESTARGZ_PATH` > `~/.ipfs-estargz`.
 */
export function resolveRepoPath (flag?: string, env: NodeJS.ProcessEnv = process.env): string {
  if (flag != null && flag !== '') return resolve(flag)
  const fromEnv = env[DEFAULTS.envVar]
  if (fromEnv != null && fromEnv !== '') return resolve(fromEnv)
  return join(homedir(), DEFAULTS.dirName)
}

/** Repos locked by this process: a second open in the same process must fail too. */
const heldHere = new Set<string>()

function isAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

export interface RepoLock {
  readonly path: string
  release: () => Promise<void>
}

/**
 * Takes the repo lock: a file holding our pid, created exclusively. A lock left by a process
 * that no longer exists (a crash, SIGKILL) is stale and taken over.
 */
export async function lockRepo (repo: string): Promise<RepoLock> {
  const dir = resolve(repo)
  await mkdir(dir, { recursive: true })
  const path = join(dir, DEFAULTS.lockFile)
  for (let attempt = 0; ; attempt++) {
    if (heldHere.has(dir)) throw new RepoLockedError(dir, process.pid)
    try {
      const fh = await open(path, 'wx')
      try { await fh.writeFile(`${process.pid}\n`) } finally { await fh.close() }
      heldHere.add(dir)
      let released = false
      return {
        path,
        release: async () => {
          if (released) return
          released = true
          heldHere.delete(dir)
          await rm(path, { force: true })
        }
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const pid = Number.parseInt((await readFile(path, 'utf8').catch(() => '')).trim(), 10)
      const stale = !Number.isSafeInteger(pid) || pid <= 0 || (pid !== process.pid && !isAlive(pid)) || pid === process.pid
      if (!stale || attempt > 0) throw new RepoLockedError(dir, Number.isSafeInteger(pid) ? pid : -1)
      await rm(path, { force: true })
    }
  }
}
