import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process'
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDaemon } from '../../scripts/fixtures/daemon.js'
import { hasCommand, hasFuse, isRoot, needs } from '../helpers/env.js'
import { cliPath } from '../../scripts/fixtures/tools.js'
import { allBlobs, makeImage, tagged, writeLayout } from '../../scripts/fixtures/oci-image.js'
import { snapshotsClient } from '../../scripts/fixtures/snapshots-client.js'
import { removeWorkDir } from '../../scripts/fixtures/work-dir.js'
import { run, type RunResult } from '../../scripts/fixtures/run.js'

/** The CLI run as from a shell with umask 022 (the usual default: files 0644, folders 0755). */
async function cli (args: string[]): Promise<RunResult<string>> {
  return await run('sh', ['-c', 'umask 022 && exec "$0" "$@"', process.execPath, cliPath, ...args])
}

/** A command run as nobody (uid/gid 65534). */
function asNobody (cmd: string, args: string[]): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { encoding: 'utf8', uid: 65534, gid: 65534, cwd: '/' })
}

/** Mode bits of every entry under `dir` (the folder too), by path relative to it; sockets left out. */
async function modes (dir: string, skip: (rel: string) => boolean = () => false): Promise<Map<string, { mode: number, dir: boolean }>> {
  const out = new Map<string, { mode: number, dir: boolean }>()
  const walk = async (p: string): Promise<void> => {
    const rel = relative(dir, p)
    if (skip(rel)) return
    const st = await lstat(p)
    if (st.isSocket()) return
    out.set(rel, { mode: st.mode & 0o7777, dir: st.isDirectory() })
    if (st.isDirectory()) for (const n of await readdir(p)) await walk(join(p, n))
  }
  await walk(dir)
  return out
}

/** Paths whose mode is not 0700 (folders) / 0600 (files). */
function notPrivate (m: Map<string, { mode: number, dir: boolean }>): string[] {
  return [...m].filter(([, e]) => e.mode !== (e.dir ? 0o700 : 0o600)).map(([p, e]) => `${p} ${e.mode.toString(8)}`)
}

const SECRET = 'only-root-may-read-this-7f3a'

describe.skipIf(needs({ root: isRoot, fuse: hasFuse, fusermount: hasCommand('fusermount') }))('repos are private to their user, whatever the umask', () => {
  let dir: string
  const image = makeImage({ seed: SECRET })

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'repo-private-'))
    // mkdtemp makes 0700: open it, so only the repos' own modes stand between nobody and them
    await chmod(dir, 0o755)
    await writeLayout(join(dir, 'img'), allBlobs(image), [tagged(image.manifest.descriptor, 'latest')])
    await writeFile(join(dir, 'open.txt'), SECRET, { mode: 0o644 })
    await chmod(join(dir, 'open.txt'), 0o644)
  })

  afterAll(async () => {
    if (dir == null) return
    await removeWorkDir(dir)
  })

  it('a CLI repo and its chunk cache are created 0700/0600; nobody can read the key or grep the cached files', async () => {
    expect(asNobody('cat', [join(dir, 'open.txt')]).stdout).toBe(SECRET) // nobody does reach this folder
    const repo = join(dir, 'cli')
    const pushed = await cli(['push', `oci:${join(dir, 'img')}`, '--repo', repo])
    expect(pushed.code, pushed.stderr).toBe(0)
    const root = pushed.stdout.trim()

    // a lazy mount fills the chunk cache with the files' decompressed contents
    const mnt = join(dir, 'mnt')
    await mkdir(mnt)
    await chmod(mnt, 0o755)
    const mount = spawn('sh', ['-c', 'umask 022 && exec "$0" "$@"', process.execPath, cliPath, 'mount', root, mnt, '--repo', repo], { stdio: ['ignore', 'ignore', 'pipe'] })
    let log = ''
    mount.stderr.on('data', (d: Buffer) => { log += d.toString() })
    const exited = new Promise(resolve => mount.on('exit', resolve))
    try {
      for (let i = 0; i < 300 && !log.includes('mounted at'); i++) await new Promise(resolve => setTimeout(resolve, 100))
      expect(log).toContain('mounted at')
      expect(await readFile(join(mnt, 'dir0', 'file.txt'), 'utf8')).toContain(SECRET)
    } finally {
      mount.kill('SIGTERM')
      await exited
    }

    const m = await modes(repo)
    expect(m.get('datastore/pkcs8/self.data')).toEqual({ mode: 0o600, dir: false })
    expect([...m.keys()].some(p => p.startsWith('cache/chunks/'))).toBe(true)
    expect([...m.keys()].some(p => p.startsWith('blockstore/'))).toBe(true)
    expect(notPrivate(m)).toEqual([])

    // root finds the secret in the cache; nobody cannot read anything there
    expect(spawnSync('grep', ['-rl', SECRET, join(repo, 'cache')], { encoding: 'utf8' }).stdout).toMatch(/cache\/chunks\//)
    const key = asNobody('cat', [join(repo, 'datastore', 'pkcs8', 'self.data')])
    expect(key.status).not.toBe(0)
    expect(key.stderr).toMatch(/Permission denied/)
    const grep = asNobody('grep', ['-r', SECRET, repo])
    expect(grep.status).toBe(2)
    expect(grep.stdout).toBe('')
    expect(grep.stderr).toMatch(/Permission denied/)
  })

  it('an existing repo readable by others is tightened at open, with a warning naming what changed', async () => {
    const repo = join(dir, 'cli')
    expect(spawnSync('chmod', ['-R', 'go+rX', repo]).status).toBe(0)
    expect(asNobody('cat', [join(repo, 'datastore', 'pkcs8', 'self.data')]).status).toBe(0) // readable now
    const ls = await cli(['image', 'ls', '--repo', repo])
    expect(ls.code, ls.stderr).toBe(0)
    const warning = JSON.parse(ls.stderr.trim().split('\n').find(l => l.includes('other users could read the repo')) ?? '{}') as { changed?: string[] }
    expect(warning.changed).toEqual(expect.arrayContaining(['.', 'index.sqlite', 'datastore/pkcs8/self.data', 'datastore', 'cache']))
    expect((await lstat(repo)).mode & 0o777).toBe(0o700)
    expect((await lstat(join(repo, 'index.sqlite'))).mode & 0o777).toBe(0o600)
    expect((await lstat(join(repo, 'datastore', 'pkcs8', 'self.data'))).mode & 0o777).toBe(0o600)
    expect(asNobody('cat', [join(repo, 'datastore', 'pkcs8', 'self.data')]).stderr).toMatch(/Permission denied/)
    expect(asNobody('grep', ['-r', SECRET, repo]).stdout).toBe('')
    // a private repo is left alone: no warning
    expect((await cli(['image', 'ls', '--repo', repo])).stderr).toBe('')
  })

  it('a daemon root is created private; snapshots are laid out as containerd\'s (fs 0755, work 0711); a loose root is tightened at start', async () => {
    const root = join(dir, 'daemon')
    let d = await startDaemon({ root, umask: 0o022 })
    try {
      const pushed = await cli(['push', `oci:${join(dir, 'img')}`, '--repo', root]) // runs in the daemon
      expect(pushed.code, pushed.stderr).toBe(0)
      const client = snapshotsClient(d.address)
      try {
        await client.prepare('private-test', '')
      } finally {
        client.close()
      }
    } finally {
      await d.stop()
    }
    const snapshots = join(root, 'snapshotter', 'snapshots')
    const ids = await readdir(snapshots)
    expect(ids).toHaveLength(1)
    expect((await lstat(join(snapshots, ids[0], 'fs'))).mode & 0o7777).toBe(0o755)
    expect((await lstat(join(snapshots, ids[0], 'work'))).mode & 0o7777).toBe(0o711)
    const m = await modes(root, rel => rel === `snapshotter/snapshots/${ids[0]}/fs` || rel === `snapshotter/snapshots/${ids[0]}/work`)
    expect(m.get('datastore/pkcs8/self.data')).toEqual({ mode: 0o600, dir: false })
    expect(m.get('snapshotter/metadata.db')).toEqual({ mode: 0o600, dir: false })
    expect(m.get('fuse-manager.log')).toEqual({ mode: 0o600, dir: false })
    expect(m.get('cache/chunks')).toEqual({ mode: 0o700, dir: true })
    expect(notPrivate(m)).toEqual([])
    expect(asNobody('cat', [join(root, 'datastore', 'pkcs8', 'self.data')]).stderr).toMatch(/Permission denied/)

    // made readable by hand: the next start takes it back, and says so
    for (const p of ['', 'datastore', 'datastore/pkcs8']) await chmod(join(root, p), 0o755)
    for (const p of ['index.sqlite', 'datastore/pkcs8/self.data']) await chmod(join(root, p), 0o644)
    d = await startDaemon({ root, umask: 0o022 })
    await d.stop()
    expect(d.log()).toMatch(/other users could read the repo/)
    expect(d.log()).toContain('datastore/pkcs8/self.data')
    expect((await lstat(root)).mode & 0o777).toBe(0o700)
    expect((await lstat(join(root, 'datastore', 'pkcs8', 'self.data'))).mode & 0o777).toBe(0o600)
    expect((await lstat(join(root, 'index.sqlite'))).mode & 0o777).toBe(0o600)
    expect((await lstat(join(snapshots, ids[0], 'fs'))).mode & 0o7777).toBe(0o755) // containers' modes untouched
  })
})
