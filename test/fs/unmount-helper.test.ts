import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { UnmountError } from '../../src/fs/errors.js'
import { FuseMount } from '../../src/fs/fuse.js'
import { LayerFs } from '../../src/fs/layer.js'
import { MountManager } from '../../src/fs/mounts.js'
import { fuseMountsUnder } from '../../src/fs/mountinfo.js'
import { UnmountHelper, detachMount, startUnmountHelper, unmountHelper } from '../../src/fs/unmount-helper.js'
import { silentLogger } from '../../src/logging.js'
import { FileSource } from '../../src/source/file.js'
import { run } from '../../scripts/fixtures/run.js'
import { hasCommand, hasFuse, isRoot, needs } from '../helpers/env.js'
import { helloLayer, removeDir, tempDir } from './helpers.js'

const logger = silentLogger()
const alive = (pid: number): boolean => { try { process.kill(pid, 0); return true } catch { return false } }

describe.skipIf(needs({ root: isRoot, fuse: hasFuse, fusermount: hasCommand('fusermount') }))('unmount helper', () => {
  let dir: string
  let blob: string
  let tocDigest: string

  beforeAll(async () => {
    dir = await tempDir('unmount-helper')
    ;({ blob, tocDigest } = await helloLayer(dir))
  })

  afterAll(async () => {
    await removeDir(dir)
  })

  /** A MountManager over `name` with one layer mounted at `<name>/m`. */
  async function mounted (name: string): Promise<{ mounts: MountManager, mp: string, root: string }> {
    const root = join(dir, name)
    const mp = join(root, 'm')
    await mkdir(mp, { recursive: true })
    const mounts = new MountManager({ logger }, { root })
    await mounts.start()
    await mounts.mountLayer(mp, { source: await FileSource.open(blob), logger }, { tocDigest, backgroundFetch: false })
    expect(await readFile(join(mp, 'etc/hello.txt'), 'utf8')).toBe('hello\n')
    return { mounts, mp, root }
  }

  it('a MountManager detaches its layers through the process\'s helper, which outlives it', async () => {
    const { mounts, mp, root } = await mounted('manager')
    const helper = unmountHelper()
    expect(helper?.running).toBe(true)
    const before = helper?.counts.detached ?? 0
    await mounts.unmount(mp)
    expect(await fuseMountsUnder(root)).toEqual([])
    expect(helper?.counts.detached).toBe(before + 1)
    await mounts.stop()
    // stopping it as the last session ends would be the child exit it is there to avoid
    expect(unmountHelper()?.running).toBe(true)
    expect(unmountHelper()?.pid).toBe(helper?.pid)
  })

  it('a FuseMount starts the helper before it mounts, again if the last one died', async () => {
    const old = startUnmountHelper()
    process.kill(old.pid as number, 'SIGKILL')
    for (let i = 0; i < 100 && old.running; i++) await new Promise(resolve => setTimeout(resolve, 20))
    expect(old.running).toBe(false)
    const mp = join(dir, 'alone')
    await mkdir(mp, { recursive: true })
    const fs = await LayerFs.open({ source: await FileSource.open(blob), logger }, { tocDigest, backgroundFetch: false })
    const mount = new FuseMount({ fs, logger }, mp)
    await mount.mount()
    try {
      expect(unmountHelper()?.running).toBe(true)
      expect(await readFile(join(mp, 'etc/hello.txt'), 'utf8')).toBe('hello\n')
    } finally {
      const before = unmountHelper()?.counts.detached ?? 0
      await mount.unmount()
      expect(unmountHelper()?.counts.detached).toBe(before + 1)
      await fs.stop()
    }
  })

  it('every MountManager of a process uses the one helper', async () => {
    const a = await mounted('shared-a')
    const b = await mounted('shared-b')
    const helper = unmountHelper()
    const before = helper?.counts.detached ?? 0
    await a.mounts.stop()
    await b.mounts.stop()
    expect(await fuseMountsUnder(a.root)).toEqual([])
    expect(await fuseMountsUnder(b.root)).toEqual([])
    expect(helper?.counts.detached).toBe(before + 2)
  })

  it('ends with its process: a process that mounted, unmounted and stopped exits by itself, and its helper with it', async () => {
    const child = join(fileURLToPath(new URL('.', import.meta.url)), 'unmount-cycles-child.ts')
    const r = await run(process.execPath, ['--import', 'tsx', child, blob, tocDigest, join(dir, 'ends'), '2', '2'], { timeoutMs: 60_000 })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain('detached by the helper: 4\n')
    const pid = Number(/helper pid: (\d+)/.exec(r.stdout)?.[1])
    expect(pid).toBeGreaterThan(0)
    for (let i = 0; i < 100 && alive(pid); i++) await new Promise(resolve => setTimeout(resolve, 20))
    expect(alive(pid)).toBe(false)
  })

  it('a detach that fails carries fusermount\'s and umount\'s reason, and the helper goes on', async () => {
    startUnmountHelper()
    const err = await detachMount(join(dir, 'not-a-mount')).then(() => undefined, (e: unknown) => e)
    expect(err).toBeInstanceOf(UnmountError)
    expect((err as UnmountError).code).toBe('ERR_FS_UNMOUNT')
    expect((err as Error).message).toMatch(/not-a-mount.*(not mounted|not found|no mount point|entry for)/i)
    const { mounts, mp, root } = await mounted('after-failure')
    const before = unmountHelper()?.counts.detached ?? 0
    await mounts.unmount(mp)
    expect(await fuseMountsUnder(root)).toEqual([])
    expect(unmountHelper()?.counts.detached).toBe(before + 1)
    await mounts.stop()
  })

  it('a helper that dies fails its pending detach; later detaches run a child each and still work', async () => {
    const helper = new UnmountHelper({ timeoutMs: 5000 })
    helper.start()
    const pid = helper.pid as number
    process.kill(pid, 'SIGKILL')
    const err = await helper.detach(join(dir, 'x')).then(() => undefined, (e: unknown) => e)
    expect(err).toBeInstanceOf(UnmountError)
    expect(helper.running).toBe(false)

    // the process's, killed under a MountManager: its layers still unmount (a child each), and
    // the next mount starts a new helper
    const { mounts, mp, root } = await mounted('dead-helper')
    const old = unmountHelper()
    process.kill(old?.pid as number, 'SIGKILL')
    for (let i = 0; i < 100 && old?.running === true; i++) await new Promise(resolve => setTimeout(resolve, 20))
    expect(old?.running).toBe(false)
    await mounts.unmount(mp)
    expect(await fuseMountsUnder(root)).toEqual([])
    await mounts.stop()
    await (await mounted('restarted')).mounts.stop()
    expect(unmountHelper()?.running).toBe(true)
  })

  it('a detach with no answer within its timeout fails with that reason, and that helper is dropped (its stuck answer would stall every later one)', async () => {
    const bin = join(dir, 'slow-bin')
    await mkdir(bin, { recursive: true })
    await writeFile(join(bin, 'fusermount'), '#!/bin/sh\nsleep 3\n', { mode: 0o755 })
    const path = process.env.PATH
    process.env.PATH = `${bin}:${path ?? ''}` // the helper's sh finds this fusermount first
    const helper = new UnmountHelper({ timeoutMs: 300 })
    try {
      helper.start()
    } finally {
      process.env.PATH = path
    }
    const t0 = Date.now()
    await expect(helper.detach(join(dir, 'stuck'))).rejects.toThrow(/did not answer within 300 ms/)
    expect(Date.now() - t0).toBeLessThan(2500)
    expect(helper.running).toBe(false)
    expect(helper.counts.failed).toBe(1)
  })

  it('refuses a name with a newline (it would be two requests) and leaves the next request intact', async () => {
    const helper = new UnmountHelper()
    helper.start()
    try {
      await expect(helper.detach(join(dir, 'a\nb'))).rejects.toThrow(/newline/)
      await expect(helper.detach(join(dir, 'plain'))).rejects.toThrow(/plain/)
      expect(helper.counts).toEqual({ detached: 0, failed: 1 })
    } finally {
      await helper.stop()
    }
  })
})
