import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { chmod, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MediaType } from '../../src/oci/index.js'
import { hasCommand, hasFuse, isRoot, needs } from '../helpers/env.js'
import { makeTar, type FixtureEntry } from '../../scripts/fixtures/tar.js'
import { cliPath } from '../../scripts/fixtures/tools.js'
import { blob, jsonBlob, tagged, writeLayout } from '../../scripts/fixtures/oci-image.js'
import { sha256 } from '../../scripts/fixtures/digest.js'

/**
 * `ipfs-estargz mount` as a user runs it, against hostile image content: a setuid-root binary
 * and a world-writable character device must be inert in what the mount shows (nosuid, nodev),
 * and a non-root user can list the root of a multi-layer mount.
 */

const NOBODY = 65534

/** Runs the CLI without blocking this process (which reads the mount process's stderr). */
async function cli (args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  const child = spawn(process.execPath, [cliPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (s: string) => { stdout += s })
  child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s })
  const code = await new Promise<number>(resolve => child.on('close', (c) => resolve(c ?? -1)))
  return { code, stdout, stderr }
}

/** Options of the mount at `mountpoint` (the last one there), from /proc/self/mountinfo. */
function mountOptions (mountpoint: string): string[] | undefined {
  let found: string[] | undefined
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ')
    if (f[4] === mountpoint) found = f[5].split(',')
  }
  return found
}

/** Every mount at or below `dir`. */
function mountsUnder (dir: string): Array<{ mountpoint: string, options: string[] }> {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(l => l !== '').map(l => l.split(' '))
    .filter(f => f[4] === dir || f[4].startsWith(dir + '/')).map(f => ({ mountpoint: f[4], options: f[5].split(',') }))
}

function asNobody (cmd: string, args: string[]): { code: number, stdout: string, stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', uid: NOBODY, gid: NOBODY, cwd: '/' })
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr }
}

/** Writes an OCI layout of gzip layers made from `layers`. */
async function writeImage (dir: string, layers: FixtureEntry[][]): Promise<void> {
  const tars = layers.map(l => makeTar(l))
  const blobs = tars.map(t => blob(MediaType.OciLayerGzip, gzipSync(t)))
  const config = jsonBlob(MediaType.OciConfig, {
    architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: tars.map(sha256) }
  })
  const manifest = jsonBlob(MediaType.OciManifest, { schemaVersion: 2, mediaType: MediaType.OciManifest, config: config.descriptor, layers: blobs.map(b => b.descriptor) })
  await writeLayout(dir, [...blobs, config, manifest], [tagged(manifest.descriptor, 'latest')])
}

/** Starts `ipfs-estargz mount` in the background; resolves once it says the image is mounted. */
async function startMount (args: string[]): Promise<ChildProcess> {
  const child = spawn(process.execPath, [cliPath, 'mount', ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
  let err = ''
  await new Promise<void>((resolve, reject) => {
    child.stderr?.setEncoding('utf8').on('data', (s: string) => {
      err += s
      if (err.includes(' mounted at ')) resolve()
    })
    child.on('exit', (code) => reject(new Error(`mount exited (${String(code)}) before mounting: ${err}`)))
  })
  return child
}

describe.skipIf(needs({ root: isRoot, fuse: hasFuse, fusermount: hasCommand('fusermount') }))('ipfs-estargz mount of hostile content', () => {
  let dir: string
  const running: Array<{ child: ChildProcess, mountpoint: string }> = []
  const base: FixtureEntry[] = [
    { name: 'bin/', type: 'dir' },
    // A copy of `id`, setuid root: run by nobody it would print euid 0 on a suid mount.
    { name: 'bin/id-suid', data: readFileSync('/usr/bin/id'), mode: 0o4755, uid: 0, gid: 0 },
    { name: 'dev/', type: 'dir' },
    // /dev/null's numbers, mode 0666: openable by anyone on a mount that honours devices.
    { name: 'dev/anyone', type: 'char', devMajor: 1, devMinor: 3, mode: 0o666 },
    { name: 'hello.txt', data: 'hello\n' }
  ]

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cli-mount-'))
    await chmod(dir, 0o755) // nobody must reach the mountpoints
    await writeImage(join(dir, 'one'), [base])
    await writeImage(join(dir, 'three'), [base, [{ name: 'app/', type: 'dir' }, { name: 'app/a.txt', data: 'a\n' }], [{ name: 'app/b.txt', data: 'b\n' }]])
  })

  afterAll(async () => {
    for (const { child, mountpoint } of running) {
      if (child.exitCode == null && child.signalCode == null) {
        const exited = new Promise(resolve => child.once('exit', resolve))
        child.kill('SIGTERM')
        await exited
      }
      spawnSync('umount', ['-l', mountpoint])
    }
    await rm(dir, { recursive: true, force: true })
  })

  for (const [name, layers] of [['one', 1], ['three', 3]] as const) {
    it(`${name} layer(s): the mount is nosuid,nodev (setuid and devices inert), nobody lists and reads it`, async () => {
      const repo = join(dir, `repo-${name}`)
      const push = await cli(['push', `oci:${join(dir, name)}`, '--repo', repo, '--level', '1'])
      expect(push.code, push.stderr).toBe(0)
      const cid = push.stdout.trim()
      const mnt = join(dir, `mnt-${name}`)
      await mkdir(mnt)
      const child = await startMount([cid, mnt, '--repo', repo, '--log-level', 'warn'])
      running.push({ child, mountpoint: mnt })

      const options = mountOptions(mnt)
      expect(options, 'the mount the user sees').toEqual(expect.arrayContaining(['ro', 'nosuid', 'nodev']))
      // Every FUSE layer mount behind it is nosuid,nodev too.
      const layerMounts = mountsUnder(repo)
      expect(layerMounts.length).toBe(layers)
      for (const m of layerMounts) expect(m.options, m.mountpoint).toEqual(expect.arrayContaining(['ro', 'nosuid', 'nodev']))

      const ls = asNobody('ls', ['-a', mnt])
      expect(ls.code, ls.stderr).toBe(0)
      expect(ls.stdout.split('\n')).toEqual(expect.arrayContaining(['bin', 'dev', 'hello.txt']))
      expect(asNobody('cat', [join(mnt, 'hello.txt')]).stdout).toBe('hello\n')
      if (layers === 3) expect(asNobody('cat', [join(mnt, 'app', 'a.txt'), join(mnt, 'app', 'b.txt')]).stdout).toBe('a\nb\n')

      const id = asNobody(join(mnt, 'bin', 'id-suid'), ['-u'])
      expect(id.code, id.stderr).toBe(0)
      expect(id.stdout.trim(), 'the setuid bit is not honoured').toBe(String(NOBODY))
      const dev = asNobody('sh', ['-c', `: < ${join(mnt, 'dev', 'anyone')}`])
      expect(dev.code, 'the device cannot be opened').not.toBe(0)
      expect(dev.stderr).toMatch(/Permission denied/)

      const umount = await cli(['umount', mnt, '--repo', repo])
      expect(umount.code, umount.stderr).toBe(0)
      expect(mountsUnder(mnt)).toEqual([])
      expect(mountsUnder(repo)).toEqual([])
      running.pop()
      expect(await readFile(join(mnt, 'hello.txt'), 'utf8').catch((e: NodeJS.ErrnoException) => e.code)).toBe('ENOENT')
    })
  }
})
