import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseRecord } from '../../src/optimize/index.js'
import { startDaemon, type RunningDaemon } from '../../scripts/fixtures/daemon.js'
import { hasCommand, hasFuse, isRoot, needs } from '../helpers/env.js'
import { cliPath } from '../../scripts/fixtures/tools.js'
import { cli, mountsUnder, processesRunning, writeSmallImage, type SmallImage } from './helpers.js'

async function exited (child: ChildProcess): Promise<number | null> {
  if (child.exitCode != null) return child.exitCode
  return await new Promise(resolve => child.once('exit', code => resolve(code)))
}

async function until (what: string, ok: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

describe.skipIf(needs({ root: isRoot, fuse: hasFuse, unshare: hasCommand('unshare'), ldd: hasCommand('ldd') }))('ipfs-estargz optimize through the daemon', () => {
  let dir: string
  let tmp: string
  let img: SmallImage
  let d: RunningDaemon

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'optimize-daemon-'))
    tmp = join(dir, 'tmp')
    await mkdir(tmp)
    img = await writeSmallImage(dir)
    d = await startDaemon({ root: join(dir, 'root'), env: { TMPDIR: tmp }, config: '[fuse_manager]\nenable = false\n' })
  }, 300_000)
  afterAll(async () => {
    await d?.stop()
    if (dir != null) await rm(dir, { recursive: true, force: true })
  })

  it('runs in the daemon that owns the repo: relative paths are the caller\'s, the image is in the daemon\'s repo', async () => {
    const r = await cli(['optimize', 'oci:small', '--repo', d.root, '--record-out', 'rec.jsonl', '--output', 'oci:out', '--level', '1'], { cwd: dir })
    expect(r.code, r.stderr).toBe(0)
    // spawnSync held this process' event loop: the daemon's log arrives now
    await until('the daemon\'s log', () => d.log().includes('"argv":["optimize"'), 10_000)
    expect(r.stderr).toContain('got hello') // the workload's output reaches the caller
    const root = r.stdout.trim()
    expect(root).toMatch(/^baf/)
    expect((await cli(['image', 'ls', '--repo', d.root])).stdout).toContain(root)
    expect(parseRecord(await readFile(join(dir, 'rec.jsonl'), 'utf8')).map(e => e.path)).toContain('etc/app.conf')
    expect(existsSync(join(dir, 'out', 'index.json'))).toBe(true)
    expect(readdirSync(tmp)).toEqual([])
    expect(mountsUnder(tmp)).toEqual([])
  })

  it('kill -9 of the CLI stops the workload in the daemon; nothing is left running, mounted or stored, and the daemon serves on', async () => {
    const sleeper = ['/bin/sleep', '4343.5']
    const child = spawn(process.execPath, [cliPath, 'optimize', `oci:${img.layout}`, '--repo', d.root, '--period', '600', '--entrypoint', JSON.stringify(sleeper), '--args', '[]', '--level', '1'], { stdio: 'ignore' })
    await until('the workload to start', () => processesRunning(sleeper).length > 0, 60_000)
    child.kill('SIGKILL')
    await exited(child)
    await until('the workload to be stopped', () => processesRunning(sleeper).length === 0, 20_000)
    await until('the sandbox to be cleared', () => readdirSync(tmp).length === 0 && mountsUnder(tmp).length === 0, 20_000)
    const id = await cli(['id', '--repo', d.root])
    expect(id.code, id.stderr).toBe(0)
    expect((await cli(['image', 'ls', '--repo', d.root])).stdout.trim().split('\n')).toHaveLength(1) // only the first test's
  })
})
