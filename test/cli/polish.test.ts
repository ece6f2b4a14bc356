import { spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { chmod, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDaemon, type RunningDaemon } from '../../scripts/fixtures/daemon.js'
import { allBlobs, makeImage, tagged, writeLayout } from '../../scripts/fixtures/oci-image.js'
import { cliPath } from '../../scripts/fixtures/tools.js'
import { DEFAULTS as CLI_DEFAULTS } from '../../src/cli/options.js'
import { hasCommand, hasFuse, isRoot, needs } from '../helpers/env.js'
import { until } from '../ipfs/helpers.js'
import { run, type RunResult } from '../../scripts/fixtures/run.js'

/**
 * The rough edges a newcomer hits on the command line: output a terminal shows (progress lines,
 * tables), commands that must fail instead of hanging or creating things, `umount` without
 * `--repo`, a closed pipe, `--repo=DIR` through the daemon, and the run-as-root hints.
 */

const NOBODY = 65534
const MOUNT_POINTERS = CLI_DEFAULTS.mountPointerDir
/** A CID no node anywhere has (sha256 of "no such block h17c"). */
const UNKNOWN = 'bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku'

/** The CLI's environment: no daemon found by default, no repo named by the environment, a home of its own. */
let home = ''
function env (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, HOME: home, IPFS_ESTARGZ_API: join(home, 'no-daemon.sock'), ...extra }
  delete e.IPFS_ESTARGZ_PATH
  return e
}

async function cli (args: string[], opts: { uid?: number, cwd?: string } = {}): Promise<RunResult<string>> {
  const [cmd, argv] = opts.uid != null
    ? ['setpriv', [`--reuid=${opts.uid}`, `--regid=${opts.uid}`, '--clear-groups', process.execPath, cliPath, ...args]]
    : [process.execPath, [cliPath, ...args]]
  // a regression that hangs (an unknown CID waited for forever) fails instead of blocking the suite
  return await run(cmd, argv, { env: env(), cwd: opts.cwd, timeoutMs: 45_000 })
}

const quote = (s: string): string => `'${s.replace(/'/g, "'\\''")}'`

/** Runs the CLI on a pseudo-terminal (util-linux `script`): what a user sees, escapes included. */
async function onTty (args: string[]): Promise<{ code: number, out: string }> {
  const line = [process.execPath, cliPath, ...args].map(quote).join(' ')
  const r = await run('script', ['-qec', line, '/dev/null'], { env: env(), timeoutMs: 45_000 })
  return { code: r.code, out: r.stdout }
}

describe.skipIf(needs({ script: hasCommand('script'), setpriv: hasCommand('setpriv') }))('CLI polish', () => {
  let dir: string
  let layout: string
  let repo: string
  let root: string

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cli-polish-'))
    await chmod(dir, 0o755) // nobody must reach the files the not-root tests name
    home = join(dir, 'home')
    await mkdir(home)
    layout = join(dir, 'img')
    // layers larger than a pipe's buffer: a reader that goes away meets a writer still writing
    const img = makeImage({ layerCount: 2, seed: 'polish', layerSize: 1 << 20, noise: true })
    await writeLayout(layout, allBlobs(img), [tagged(img.manifest.descriptor, 'v1')])
    repo = join(dir, 'repo')
    const r = await cli(['push', `oci:${layout}:v1`, '--repo', repo, '--level', '1'])
    expect(r.code, r.stderr).toBe(0)
    root = r.stdout.trim()
  }, 120_000)
  afterAll(async () => {
    await new Promise(resolve => setTimeout(resolve, 1000))
    await rm(dir, { recursive: true, force: true })
  })

  it('a command that only reads fails with "no repo at DIR" on a missing repo and creates nothing', async () => {
    const missing = join(dir, 'typo')
    for (const args of [['image', 'ls'], ['export', root, '-o', join(dir, 'x.car')]]) {
      const r = await cli([...args, '--repo', missing])
      expect(r.code, args.join(' ')).toBe(1)
      expect(r.stderr, args.join(' ')).toContain(`no repo at ${missing}`)
      expect(r.stderr).toContain('ERR_NO_REPO')
      expect(existsSync(missing), args.join(' ')).toBe(false)
    }
  }, 60_000)

  it('not root: mount says to run as root, and a permission error on root\'s repo says so too', async () => {
    await mkdir(join(dir, 'mnt-nobody'), { recursive: true })
    const m = await cli(['mount', root, join(dir, 'mnt-nobody'), '--repo', join(dir, 'nobody-repo')], { uid: NOBODY, cwd: '/' })
    expect(m.code).toBe(1)
    expect(m.stderr).toContain('mount needs root: run it as root')
    expect(m.stderr).toContain('ERR_NOT_ROOT')
    expect(existsSync(join(dir, 'nobody-repo'))).toBe(false)
    const ls = await cli(['image', 'ls', '--repo', repo], { uid: NOBODY, cwd: '/' }) // the repo is 0700, root's
    expect(ls.code).toBe(1)
    expect(ls.stderr).toMatch(/EACCES.*: run it as root/)
  }, 60_000)

  describe.skipIf(needs({ root: isRoot, fuse: hasFuse }))('mount and umount', () => {
    it('mount of a CID no peer has fails after --open-timeout with "no peer has CID …"', async () => {
      const mnt = join(dir, 'mnt-unknown')
      await mkdir(mnt)
      const r = await cli(['mount', UNKNOWN, mnt, '--repo', repo, '--open-timeout', '1'])
      expect(r.code).toBe(1)
      expect(r.stderr).toContain(`no peer has CID ${UNKNOWN}`)
      expect(r.stderr).toContain('ERR_MOUNT_OPEN_TIMEOUT')
    }, 60_000)

    it('umount DIR without --repo finds the mount made with --repo: the mount process exits, no mount is left', async () => {
      const mnt = join(dir, 'mnt')
      await mkdir(mnt)
      const child = spawn(process.execPath, [cliPath, 'mount', root, mnt, '--repo', repo], { stdio: ['ignore', 'ignore', 'pipe'], env: env() })
      let err = ''
      child.stderr.setEncoding('utf8').on('data', (s: string) => { err += s })
      const exited = new Promise<number | null>(resolve => child.on('exit', resolve))
      for (let i = 0; i < 300 && !err.includes('mounted at'); i++) await new Promise(resolve => setTimeout(resolve, 100))
      expect(err).toContain('mounted at')
      expect(readFileSync(join(mnt, 'dir0', 'file.txt'), 'utf8')).toBe('layer 0 of amd64 polish\n')
      const u = await new Promise<number | null>(resolve => {
        // from another directory, with another default repo: only the mountpoint is given
        const p = spawn(process.execPath, [cliPath, 'umount', relative('/', mnt)], { cwd: '/', stdio: 'ignore', env: env() })
        p.on('exit', resolve)
      })
      expect(u).toBe(0)
      expect(await Promise.race([exited, new Promise(resolve => setTimeout(() => resolve('still running'), 20_000))])).toBe(0)
      const mountinfo = readFileSync('/proc/self/mountinfo', 'utf8')
      expect(mountinfo).not.toContain(` ${mnt} `)
      expect(mountinfo).not.toContain(join(repo, 'mounts'))
      expect(await readdir(mnt)).toEqual([])
    }, 90_000)
  })

  it.skipIf(needs({ root: isRoot }))('umount follows only a pointer to a mount state folder of that mountpoint: a forged one removes nothing', async () => {
    const mnt = join(dir, 'mnt-forged')
    const victim = join(dir, 'victim')
    await mkdir(mnt)
    await mkdir(victim)
    await writeFile(join(victim, 'pid'), 'none') // no process to signal: umount goes on to clear the folder
    const pointer = join(MOUNT_POINTERS, createHash('sha256').update(mnt).digest('hex').slice(0, 16))
    await mkdir(MOUNT_POINTERS, { recursive: true, mode: 0o700 })
    await symlink(victim, pointer)
    try {
      const r = await cli(['umount', mnt])
      expect(r.code, r.stderr).toBe(0)
      expect(await readdir(victim)).toEqual(['pid'])
    } finally {
      await rm(pointer, { force: true })
    }
  }, 60_000)

  describe('through a daemon', () => {
    let d: RunningDaemon
    beforeAll(async () => {
      d = await startDaemon({ root: join(dir, 'd'), config: '[fuse_manager]\nenable = false\n[ipfs]\nfind_timeout_sec = 1\n', env: { HOME: home }, logLevel: 'info' })
    }, 120_000)
    afterAll(async () => { await d?.stop() })

    it('push on a terminal (forwarded) draws its progress, then prints the root CID, which nothing overwrites', async () => {
      const push = await onTty(['push', `oci:${layout}:v1`, '--repo', d.root, '--level', '1'])
      expect(push.code, push.out).toBe(0)
      expect(push.out).toContain('published')
      const at = push.out.lastIndexOf(root)
      expect(at, push.out).toBeGreaterThan(push.out.lastIndexOf('published'))
      // after the CID: no cursor movement or erase (a second progress.stop() moved up over it)
      expect(push.out.slice(at)).not.toMatch(/\x1b\[/)
    }, 60_000)

    it('image ls: a table on a terminal that keeps the source tag, JSON with --json, JSON lines on a pipe', async () => {
      const table = await onTty(['image', 'ls', '--repo', d.root])
      expect(table.code, table.out).toBe(0)
      const lines = table.out.trim().split(/\r?\n/)
      expect(lines[0]).toMatch(/^ROOT CID +NAME +TAGS +SIZE +CREATED$/)
      expect(lines[1]).toContain(root)
      expect(lines[1]).toContain(`oci:${layout}:v1`)
      const json = await onTty(['image', 'ls', '--repo', d.root, '--json'])
      expect(JSON.parse(json.out.trim())).toMatchObject({ root, name: `oci:${layout}:v1` })
      const piped = await cli(['image', 'ls', '--repo', d.root])
      expect(JSON.parse(piped.stdout.trim())).toMatchObject({ root, name: `oci:${layout}:v1` })
    }, 60_000)

    it('--repo=DIR (relative too) is forwarded to the daemon that owns DIR', async () => {
      const abs = await cli(['image', 'ls', `--repo=${d.root}`])
      expect(abs.code, abs.stderr).toBe(0)
      expect(JSON.parse(abs.stdout.trim())).toMatchObject({ root })
      const rel = await cli(['image', 'ls', '--repo=d'], { cwd: dir })
      expect(rel.code, rel.stderr).toBe(0)
      expect(JSON.parse(rel.stdout.trim())).toMatchObject({ root })
      // run by the daemon (its log comes a little later), the path made absolute
      await until(() => d.log().includes(`"--repo=${d.root}"`), 'the daemon to log the command', 10_000)
    }, 60_000)

    it('image inspect of a CID no peer has fails with "no peer has CID …" after [ipfs] find_timeout_sec, or --timeout (it waited forever)', async () => {
      const r = await cli(['image', 'inspect', UNKNOWN, '--repo', d.root])
      expect(r.code).toBe(1)
      expect(r.stderr).toContain(`no peer has CID ${UNKNOWN}: the image's index, manifest and config did not arrive within 1 s`)
      expect(r.stderr).toContain('ERR_NO_PEER_HAS_CID')
      const flag = await cli(['image', 'inspect', UNKNOWN, '--repo', d.root, '--timeout', '2'])
      expect(flag.stderr).toContain('did not arrive within 2 s')
    }, 60_000)

    it('--offline on a missing block says so in our words, with our code', async () => {
      const r = await cli(['image', 'inspect', UNKNOWN, '--repo', d.root, '--offline'])
      expect(r.code).toBe(1)
      expect(r.stderr.trim()).toBe(`ipfs-estargz: block ${UNKNOWN} is not in the local blockstore (offline) (ERR_BLOCK_NOT_FOUND)`)
    }, 60_000)

    it('a forwarded command piped to `head` ends quietly, every time', async () => {
      for (let i = 0; i < 6; i++) {
        const r = await run('bash', ['-c', `${[process.execPath, cliPath, 'export', root, '-o', '-', '--repo', d.root].map(quote).join(' ')} | head -c 10 >/dev/null; echo "exit=\${PIPESTATUS[0]}" >&2`], { env: env(), timeoutMs: 45_000 })
        // quiet: at most export's own summary line; no EPIPE, no stack trace
        expect(r.stderr, r.stderr).toMatch(/^(exported 1 image .*\n)?exit=(0|141)\n$/)
      }
    }, 90_000)
  })
})
