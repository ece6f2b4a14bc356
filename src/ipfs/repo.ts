import { chmod, lstat, mkdir, readdir, readFile, readlink, rm, symlink } from 'node:fs/promises'
import { homedir } from 'node:os'
import { join, resolve } from 'node:path'
import type { Logger } from '../logging.js'
import { PRIVATE, usePrivateUmask } from '../private-files.js'
import { RepoLockedError } from './errors.js'

/** Repo defaults: where the CLI's repo lives when nothing says otherwise. */
export const DEFAULTS = {
  /** Environment variable naming the repo (like Kubo's `IPFS_PATH`). */
  envVar: 'IPFS_ESTARGZ_PATH',
  /** Folder under the home directory. */
  dirName: '.ipfs-estargz',
  /** Lock file inside the repo. */
  lockFile: 'repo.lock',
  /**
   * An existing repo is tightened to these depths at open: every entry of the repo folder and of
   * its folders. Deeper, the bulk stores (blocks, pinned-block records, cached chunks) hold one
   * file per block or chunk: they are left as they are, unreachable through their 0700 folders.
   */
  tightenDepth: 2,
  /** Deeper folders whose files are tightened too: the node's key and the keychain's salt. */
  tightenAll: ['datastore/pkcs8', 'datastore/info'] as readonly string[],
  /** Never walked: containers' files, whose modes are theirs (and FUSE mounts below). */
  tightenSkip: ['snapshotter/snapshots', 'mounts'] as readonly string[],
  /** Changed paths named in the warning; the rest is counted. */
  tightenReportMax: 20
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

/** Entries that make a folder a repo (or a daemon root): we may change their modes. */
const REPO_MARKERS = ['datastore', 'blocks', 'blockstore', 'index.sqlite']

/**
 * Creates the repo folder private (0700, private umask from now on), or tightens an existing one
 * that others can read: the folder, its entries and their entries (see `DEFAULTS.tighten*`) lose
 * their group and other bits, with one warning naming what changed. A folder that holds other
 * things than a repo (`--repo` pointed at a home or /tmp) is not touched beyond a warning.
 * Returns the changed paths.
 */
export async function prepareRepo (repo: string, logger: Logger): Promise<string[]> {
  usePrivateUmask()
  const dir = resolve(repo)
  const made = await mkdir(dir, { recursive: true, mode: PRIVATE.dirMode })
  if (made != null) return []
  const names = await readdir(dir)
  if (names.length > 0 && !names.some(n => REPO_MARKERS.includes(n))) {
    const st = await lstat(dir)
    if ((st.mode & 0o077) !== 0) logger.warn({ repo: dir }, 'the repo folder holds other files and others can enter it: not changing its modes')
    return []
  }
  const changed: Array<{ rel: string, dir: boolean }> = []
  const tighten = async (path: string, rel: string, depth: number): Promise<void> => {
    let st
    try { st = await lstat(path) } catch { return } // gone meanwhile
    if (st.isDirectory()) {
      if ((st.mode & 0o077) !== 0) {
        await chmod(path, (st.mode & 0o700) | PRIVATE.dirMode)
        changed.push({ rel, dir: true })
      }
      if (DEFAULTS.tightenSkip.includes(rel)) return
      const all = DEFAULTS.tightenAll.some(t => rel === t || rel.startsWith(`${t}/`))
      if (depth >= DEFAULTS.tightenDepth && !all) return
      for (const name of await readdir(path).catch(() => [])) {
        await tighten(join(path, name), rel === '' ? name : `${rel}/${name}`, depth + 1)
      }
    } else if (st.isFile() && (st.mode & 0o077) !== 0) {
      // sockets keep the modes they were given; symlinks have none
      await chmod(path, st.mode & 0o700)
      changed.push({ rel, dir: false })
    }
  }
  await tighten(dir, '', 0)
  if (changed.length > 0) {
    // files first (the key, the databases), then folders, shallow before deep
    const named = changed.map(c => ({ ...c, depth: c.rel.split('/').length })).sort((a, b) => Number(a.dir) - Number(b.dir) || a.depth - b.depth || a.rel.localeCompare(b.rel))
    logger.warn({ repo: dir, changed: named.slice(0, DEFAULTS.tightenReportMax).map(c => c.rel === '' ? '.' : c.rel), more: Math.max(0, changed.length - DEFAULTS.tightenReportMax) },
      `other users could read the repo: removed their access to ${changed.length} files and folders`)
  }
  return changed.map(c => join(dir, c.rel))
}

/** Repos locked by this process: a second open in the same process must fail too. */
const heldHere = new Set<string>()

function isAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM' // Node's errno: alive, but not ours to signal
  }
}

/** The pid a lock names: its symlink target, or the text of a lock file older versions wrote. */
async function lockOwner (path: string): Promise<number> {
  const text = await readlink(path).catch(async () => await readFile(path, 'utf8').catch(() => ''))
  return Number.parseInt(text.trim(), 10)
}

export interface RepoLock {
  readonly path: string
  release: () => Promise<void>
}

/**
 * Takes the repo lock: a symlink whose target is our pid, created exclusively. A symlink, not a
 * file holding the pid: a short link target lives in the inode, so the lock can be taken on a
 * full disk and a repo stays readable (`image ls`) after a push ran out of space. A lock left by
 * a process that no longer exists (a crash, SIGKILL) is stale and taken over.
 */
export async function lockRepo (repo: string): Promise<RepoLock> {
  const dir = resolve(repo)
  await mkdir(dir, { recursive: true, mode: PRIVATE.dirMode })
  const path = join(dir, DEFAULTS.lockFile)
  for (let attempt = 0; ; attempt++) {
    if (heldHere.has(dir)) throw new RepoLockedError(dir, process.pid)
    try {
      await symlink(String(process.pid), path)
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
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err // Node's errno: the lock file is there
      const pid = await lockOwner(path)
      const stale = !Number.isSafeInteger(pid) || pid <= 0 || (pid !== process.pid && !isAlive(pid)) || pid === process.pid
      if (!stale || attempt > 0) throw new RepoLockedError(dir, Number.isSafeInteger(pid) ? pid : -1)
      await rm(path, { force: true })
    }
  }
}
