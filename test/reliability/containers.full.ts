/**
 * Load (full run only: `npm run test:reliability`): 20 containers started at once from one
 * image through a real containerd on our snapshotter. The image (Debian + python3) is pulled
 * lazily by CID from a seed node over libp2p; every container stands on its own active snapshot
 * over the same lazy layers, runs python3 and has dpkg check every file of two packages against
 * their md5sums (so every byte those files hold is read through the FUSE mounts). All must pass,
 * none may fall back to a download, and nothing of theirs may be left once they are removed.
 */
import { spawnSync } from 'node:child_process'
import { mkdtemp, readFile, readdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { containerdNeeds, startContainerd, type PrivateContainerd } from '../../scripts/fixtures/containerd.js'
import { startDaemon, type RunningDaemon } from '../../scripts/fixtures/daemon.js'
import { debianImageNeeds } from '../../scripts/fixtures/debian-image.js'
import { pushedDebianRepo } from '../../scripts/fixtures/pushed-debian.js'
import { cliPath } from '../../scripts/fixtures/tools.js'
import { hasCommand, hasFuse, needs } from '../helpers/env.js'
import { record } from './harness.js'
import { removeWorkDir } from '../../scripts/fixtures/work-dir.js'

const CONTAINERS = 20

function cli (args: string[]): { code: number, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', maxBuffer: 1 << 26, timeout: 300_000, killSignal: 'SIGKILL' })
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.error === undefined ? r.stderr : `${r.error.message}\n${r.stderr}` }
}

/** RSS (bytes) and open FDs of a process. */
async function usage (pid: number): Promise<{ rss: number, fds: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return { rss: Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024, fds: (await readdir(`/proc/${pid}/fd`)).length }
}

describe.skipIf(needs({ ...containerdNeeds, ...debianImageNeeds, fuse: hasFuse, fusermount: hasCommand('fusermount') }))(`${CONTAINERS} containers started at once from one image through containerd`, () => {
  let dir: string
  let seed: RunningDaemon | undefined
  let node: RunningDaemon | undefined
  let ctrd: PrivateContainerd | undefined
  let root: string

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'containers-'))
    root = (await pushedDebianRepo(join(dir, 'seed'))).root
    seed = await startDaemon({ root: join(dir, 'seed'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    const peer = (JSON.parse(cli(['id', '--repo', join(dir, 'seed')]).stdout) as { addresses: string[] }).addresses[0]
    node = await startDaemon({ root: join(dir, 'node'), peers: [peer], config: '[fs]\nbackground_fetch = false\n' })
    ctrd = await startContainerd({ proxyPlugins: { 'ipfs-estargz': node.address } })
  }, 900_000)

  afterAll(async () => {
    await ctrd?.stop()
    await node?.stop()
    await seed?.stop()
    if (dir != null) await removeWorkDir(dir)
  })

  it(`${CONTAINERS} containers run python3 and dpkg --verify at once, all right, none falls back, nothing left`, async () => {
    const c = ctrd as PrivateContainerd
    const pulled = cli(['pull', `ipfs://${root}`, '--repo', join(dir, 'node'), '--address', c.address, '--json', '--require-lazy'])
    expect(pulled.code, pulled.stderr).toBe(0)
    const name = (JSON.parse(pulled.stdout) as { name: string }).name
    const pid = (node as RunningDaemon).proc.pid as number
    const before = await usage(pid)
    const activeBefore = (await c.ctr(['snapshots', '--snapshotter', 'ipfs-estargz', 'ls'])).split('\n').filter(l => /\bActive\b/.test(l)).length

    const t0 = Date.now()
    const script = 'python3 -c "print(6*7)" && dpkg --verify libpython3.11-stdlib python3.11-minimal && echo verified'
    const results = await Promise.allSettled(Array.from({ length: CONTAINERS }, async (_, i) =>
      await c.ctr(['run', '--rm', '--snapshotter', 'ipfs-estargz', name, `load-${i}`, 'sh', '-c', script], { timeoutMs: 600_000 })))
    const seconds = (Date.now() - t0) / 1000
    const after = await usage(pid)

    const failures = results.flatMap((r, i) => r.status === 'rejected' ? [`load-${i}: ${String(r.reason)}`] : r.value.trim() !== '42\nverified' ? [`load-${i}: ${JSON.stringify(r.value)}`] : [])
    const log = (node as RunningDaemon).log()
    const fallbacks = (log.match(/falling back to a normal snapshot/g) ?? []).length
    const activeAfter = (await c.ctr(['snapshots', '--snapshotter', 'ipfs-estargz', 'ls'])).split('\n').filter(l => /\bActive\b/.test(l)).length
    record({
      kind: 'load',
      load: `${CONTAINERS} containers started at once from one image through containerd`,
      held: `${CONTAINERS - failures.length}/${CONTAINERS} ran python3 and dpkg --verify (2 packages) right`,
      seconds,
      rssDriftMiB: (after.rss - before.rss) / 2 ** 20,
      fdDrift: after.fds - before.fds,
      note: `the pulling daemon's RSS ${(before.rss / 2 ** 20).toFixed(0)} → ${(after.rss / 2 ** 20).toFixed(0)} MiB, FDs ${before.fds} → ${after.fds}; ${fallbacks} fallbacks; ${activeAfter - activeBefore} active snapshots left`
    })
    expect(failures, failures.join('\n')).toEqual([])
    expect(fallbacks).toBe(0)
    // --rm removed every container's snapshot
    expect(activeAfter).toBe(activeBefore)
    expect(await c.ctr(['containers', 'ls', '-q'])).toBe('')
  }, 1_200_000)
})
