import { spawn } from 'node:child_process'
import { chmod, lstat, mkdir, mkdtemp, readlink, rm, writeFile } from 'node:fs/promises'
import { homedir, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import pino from 'pino'
import { lockRepo, prepareRepo, resolveRepoPath } from '../../src/ipfs/repo.js'

const dirs: string[] = []
afterAll(async () => { for (const d of dirs) await rm(d, { recursive: true, force: true }) })
const tempDir = async (): Promise<string> => { const d = await mkdtemp(join(tmpdir(), 'repo-lock-')); dirs.push(d); return d }

describe('resolveRepoPath', () => {
  it('prefers --repo, then $IPFS_ESTARGZ_PATH, then ~/.ipfs-estargz', () => {
    expect(resolveRepoPath('rel/repo', { IPFS_ESTARGZ_PATH: '/env/repo' })).toBe(resolve('rel/repo'))
    expect(resolveRepoPath(undefined, { IPFS_ESTARGZ_PATH: '/env/repo' })).toBe('/env/repo')
    expect(resolveRepoPath('', {})).toBe(join(homedir(), '.ipfs-estargz'))
  })
})

describe('lockRepo', () => {
  it('refuses a second lock in the same process until released', async () => {
    const dir = await tempDir()
    const lock = await lockRepo(dir)
    expect(await readlink(lock.path)).toBe(String(process.pid)) // a symlink: no data block, works on a full disk
    await expect(lockRepo(dir)).rejects.toMatchObject({ code: 'ERR_REPO_LOCKED', name: 'RepoLockedError', pid: process.pid })
    await lock.release()
    const again = await lockRepo(dir)
    await again.release()
  })

  it('refuses a repo locked by another live process, takes over a stale lock', async () => {
    const dir = await tempDir()
    const child = spawn('sleep', ['30'], { stdio: 'ignore' })
    try {
      await writeFile(join(dir, 'repo.lock'), `${child.pid as number}\n`)
      await expect(lockRepo(dir)).rejects.toMatchObject({ code: 'ERR_REPO_LOCKED', pid: child.pid })
    } finally {
      child.kill()
      await new Promise(resolve => child.once('exit', resolve))
    }
    // the process is gone: its lock is stale
    const lock = await lockRepo(dir)
    await lock.release()
  })
})

/** A logger that keeps its records. */
function recordingLogger (): { logger: pino.Logger, records: Array<Record<string, unknown>> } {
  const records: Array<Record<string, unknown>> = []
  const logger = pino({ level: 'warn' }, { write: (line: string) => { records.push(JSON.parse(line) as Record<string, unknown>) } })
  return { logger, records }
}

const modeOf = async (p: string): Promise<number> => (await lstat(p)).mode & 0o777

describe('prepareRepo', () => {
  it('creates a missing repo 0700 and leaves a folder that holds other things alone, with a warning', async () => {
    const dir = await tempDir()
    const { logger, records } = recordingLogger()
    expect(await prepareRepo(join(dir, 'new', 'repo'), logger)).toEqual([])
    expect(await modeOf(join(dir, 'new', 'repo'))).toBe(0o700)
    // --repo pointed at a home or /tmp: not ours to chmod
    const home = join(dir, 'home')
    await mkdir(home)
    await chmod(home, 0o755)
    await writeFile(join(home, 'notes.txt'), 'x')
    await chmod(join(home, 'notes.txt'), 0o644)
    expect(await prepareRepo(home, logger)).toEqual([])
    expect(await modeOf(home)).toBe(0o755)
    expect(await modeOf(join(home, 'notes.txt'))).toBe(0o644)
    expect(records.map(r => r.msg)).toEqual([expect.stringMatching(/holds other files/)])
  })

  it('tightens two levels deep and the key folders, not the bulk stores\' files nor the snapshots', async () => {
    const repo = await tempDir()
    const files = ['index.sqlite', 'datastore/version.data', 'datastore/pkcs8/self.data', 'datastore/info/self.data', 'datastore/pinned-block/k.data', 'blocks/AB/BLOCK.data', 'snapshotter/snapshots/1/fs/etc/passwd']
    for (const f of files) {
      await mkdir(join(repo, f, '..'), { recursive: true })
      await writeFile(join(repo, f), 'x')
    }
    for (const d of ['', 'datastore', 'datastore/pkcs8', 'datastore/pinned-block', 'blocks', 'blocks/AB', 'snapshotter', 'snapshotter/snapshots', 'snapshotter/snapshots/1/fs']) await chmod(join(repo, d), 0o755)
    for (const f of files) await chmod(join(repo, f), 0o644)
    const { logger, records } = recordingLogger()
    const changed = (await prepareRepo(repo, logger)).map(p => p.slice(repo.length + 1)).sort()
    expect(changed).toEqual(['', 'blocks', 'blocks/AB', 'datastore', 'datastore/info/self.data', 'datastore/pinned-block', 'datastore/pkcs8', 'datastore/pkcs8/self.data', 'datastore/version.data', 'index.sqlite', 'snapshotter', 'snapshotter/snapshots'].sort())
    expect(await modeOf(join(repo, 'blocks/AB/BLOCK.data'))).toBe(0o644) // unreachable through blocks/AB, not walked
    expect(await modeOf(join(repo, 'snapshotter/snapshots/1/fs'))).toBe(0o755) // a container's root: its own modes
    expect(records).toHaveLength(1)
    expect(records[0].changed).toEqual(expect.arrayContaining(['datastore/pkcs8/self.data', '.']))
    expect(await prepareRepo(repo, logger)).toEqual([]) // once private, nothing more to say
    expect(records).toHaveLength(1)
  })
})
