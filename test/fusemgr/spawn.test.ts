import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { ensureFuseManager, FuseManagerStartError } from '../../src/fusemgr/index.js'
import { silentLogger } from '../../src/logging.js'
import { hasCommand, hasFuse, isRoot, needs } from '../helpers/env.js'
import { cliPath } from '../../scripts/fixtures/tools.js'
import { removeDir, tempDir } from '../fs/helpers.js'

const alive = (pid: number): boolean => { try { process.kill(pid, 0); return true } catch { return false } }
async function gone (pid: number, ms = 10_000): Promise<boolean> {
  for (let t = 0; t < ms && alive(pid); t += 100) await new Promise(resolve => setTimeout(resolve, 100))
  return !alive(pid)
}

describe.skipIf(needs({ root: isRoot, fuse: hasFuse, fusermount: hasCommand('fusermount') }))('ensureFuseManager and the fuse-manager command', () => {
  const opts = (dir: string, extra: string[] = []): Parameters<typeof ensureFuseManager>[0] => ({
    socket: join(dir, 'fuse-manager.sock'),
    root: dir,
    logFile: join(dir, 'fuse-manager.log'),
    logLevel: 'info',
    diskCacheBytes: 1 << 30,
    memoryCacheBytes: 1 << 20,
    command: [process.execPath, cliPath, ...extra]
  })

  it('starts one detached manager, finds it again, reports its status and stops it with --stop', async () => {
    const dir = await tempDir('fm-spawn')
    try {
      const first = await ensureFuseManager(opts(dir), silentLogger())
      expect(first.started).toBe(true)
      expect(first.pid).not.toBe(process.pid)
      const again = await ensureFuseManager(opts(dir), silentLogger())
      expect(again).toMatchObject({ started: false, pid: first.pid })
      const status = spawnSync(process.execPath, [cliPath, 'fuse-manager', '--root', dir, '--status'], { encoding: 'utf8' })
      expect(status.status, status.stderr).toBe(0)
      expect(JSON.parse(status.stdout)).toMatchObject({ ok: true, pid: first.pid, mounts: 0, layers: [] })
      const stop = spawnSync(process.execPath, [cliPath, 'fuse-manager', '--root', dir, '--stop'], { encoding: 'utf8' })
      expect(stop.status, stop.stderr).toBe(0)
      expect(await gone(first.pid)).toBe(true)
      expect(existsSync(join(dir, 'fuse-manager.sock'))).toBe(false)
      expect(await readFile(join(dir, 'fuse-manager.log'), 'utf8')).toMatch(/FUSE manager started/)
      // nothing to stop is fine
      expect(spawnSync(process.execPath, [cliPath, 'fuse-manager', '--root', dir, '--stop']).status).toBe(0)
    } finally {
      await removeDir(dir)
    }
  }, 60_000)

  it('exits by itself when it has no mounts and no daemon', async () => {
    const dir = await tempDir('fm-idle')
    try {
      const { client, pid } = await ensureFuseManager(opts(dir), silentLogger())
      await client.shutdown() // the first one: default idle time
      expect(await gone(pid)).toBe(true)
      const spawned = spawnSync(process.execPath, [cliPath, 'fuse-manager', '--root', dir, '--idle-exit-sec', '1'], { encoding: 'utf8', timeout: 20_000 })
      expect(spawned.status, spawned.stderr).toBe(0)
      expect(spawned.stderr).toMatch(/no mounts and no daemon: exiting/)
    } finally {
      await removeDir(dir)
    }
  }, 60_000)

  it('a manager that cannot start is reported with the end of its log', async () => {
    const dir = await tempDir('fm-bad')
    try {
      const err = await ensureFuseManager({ ...opts(dir, ['--no-such-flag']) }, silentLogger()).catch((e: Error) => e)
      expect(err).toBeInstanceOf(FuseManagerStartError)
      expect((err as Error).message).toMatch(/exited: 2/)
      expect((err as Error).message).toMatch(/unknown option/)
    } finally {
      await removeDir(dir)
    }
  }, 60_000)
})
