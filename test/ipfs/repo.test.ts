import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { homedir, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { lockRepo, resolveRepoPath } from '../../src/ipfs/repo.js'

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
