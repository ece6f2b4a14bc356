import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { containerdNeeds, startContainerd, type PrivateContainerd } from '../../scripts/fixtures/containerd.js'
import { startDaemon, type RunningDaemon } from '../../scripts/fixtures/daemon.js'
import { hasCommand, hasFuse, needs } from '../helpers/env.js'
import { debianImageNeeds } from '../../scripts/fixtures/debian-image.js'
import { pushedDebianRepo } from '../../scripts/fixtures/pushed-debian.js'
import { repoBlockBytes } from '../../scripts/fixtures/repo-blocks.js'
import { removeWorkDir } from '../../scripts/fixtures/work-dir.js'
import { runCli as cli } from '../../scripts/fixtures/run.js'

/** Bytes of blocks a repo holds (what it fetched, for a node that only pulls). */
function repoBytes (root: string): number {
  return repoBlockBytes(root)
}

/**
 * The whole path on a real containerd: an image pushed on one node (A), pulled by CID on
 * another (B) that fetches blocks from A over libp2p, run with `ctr run` on B's lazily mounted
 * layers.
 */
describe.skipIf(needs({ ...containerdNeeds, ...debianImageNeeds, fuse: hasFuse, fusermount: hasCommand('fusermount') }))('push on one node, pull and run on another through containerd', () => {
  let dir: string
  let a: RunningDaemon | undefined
  let b: RunningDaemon | undefined
  let ctrd: PrivateContainerd | undefined
  let root: string
  let layersBytes: number

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'e2e-'))
    const json = await pushedDebianRepo(join(dir, 'a'))
    a = await startDaemon({ root: join(dir, 'a'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    root = json.root
    layersBytes = json.images[0].layers.reduce((n, l) => n + l.size, 0)
    const peer = (JSON.parse((await cli(['id', '--repo', join(dir, 'a')])).stdout) as { addresses: string[] }).addresses[0]
    // No background fetch on B: what B holds afterwards is exactly what pull + run needed.
    b = await startDaemon({ root: join(dir, 'b'), peers: [peer], config: '[fs]\nbackground_fetch = false\n' })
    ctrd = await startContainerd({ proxyPlugins: { 'ipfs-estargz': b.address } })
  }, 900_000)

  afterAll(async () => {
    await ctrd?.stop()
    await b?.stop()
    await a?.stop()
    if (dir != null) await removeWorkDir(dir)
  })

  it('pulls by CID with lazy layers and runs python3 -c "print(6*7)"', async () => {
    const c = ctrd as PrivateContainerd
    const pulled = await cli(['pull', `ipfs://${root}`, '--repo', join(dir, 'b'), '--address', c.address, '--json'])
    expect(pulled.code, pulled.stderr).toBe(0)
    const result = JSON.parse(pulled.stdout) as { name: string, layers: Array<{ lazy: boolean }>, bytesWritten: number }
    expect(result.layers.every(l => l.lazy)).toBe(true)
    const afterPull = repoBytes(join(dir, 'b'))
    const out = await c.ctr(['run', '--rm', '--snapshotter', 'ipfs-estargz', result.name, 'e2e-1', 'python3', '-c', 'print(6*7)'])
    expect(out.trim()).toBe('42')
    const afterRun = repoBytes(join(dir, 'b'))
    console.log(`fetched from the other node: ${(afterPull / 1e6).toFixed(1)} MB at pull, ${(afterRun / 1e6).toFixed(1)} MB after the run, of ${(layersBytes / 1e6).toFixed(1)} MB of layers (${(100 * afterRun / layersBytes).toFixed(1)} %)`)
    expect(afterRun).toBeLessThan(0.2 * layersBytes)
    // the image is listed in containerd and its layers are remote snapshots
    expect(await c.ctr(['images', 'ls', '-q'])).toContain(result.name)
    expect(await c.ctr(['snapshots', '--snapshotter', 'ipfs-estargz', 'ls'])).toMatch(/Committed/)
  }, 600_000)

  it('a running container keeps reading its lazy files across a daemon kill -9 and restart', async () => {
    const c = ctrd as PrivateContainerd
    const name = (await c.ctr(['images', 'ls', '-q'])).trim().split('\n')[0]
    await c.ctr(['run', '-d', '--snapshotter', 'ipfs-estargz', name, 'e2e-long', 'sleep', '3600'])
    try {
      const exec = async (id: string, args: string[]): Promise<string> => await c.ctr(['task', 'exec', '--exec-id', id, 'e2e-long', ...args])
      expect((await exec('before', ['python3', '-c', 'print(6*7)'])).trim()).toBe('42')
      const before = repoBytes(join(dir, 'b'))
      await (b as RunningDaemon).kill()
      // the daemon is gone; the FUSE manager still serves what the container already read
      expect((await exec('during', ['python3', '-c', 'print(6*7)'])).trim()).toBe('42')
      const peer = (JSON.parse((await cli(['id', '--repo', join(dir, 'a')])).stdout) as { addresses: string[] }).addresses[0]
      b = await startDaemon({ root: join(dir, 'b'), peers: [peer], config: '[fs]\nbackground_fetch = false\n' })
      expect(b.log()).toMatch(/remote snapshot still mounted: kept/)
      // files the container never read: their chunks come through the new daemon from the peer,
      // and dpkg checks every one against the package's md5sums
      const verify = await exec('after', ['sh', '-c', 'dpkg --verify libpython3.11-stdlib && echo verified'])
      expect(verify.trim()).toBe('verified')
      expect(repoBytes(join(dir, 'b'))).toBeGreaterThan(before)
      expect(await c.ctr(['task', 'ls'])).toMatch(/e2e-long\s+\d+\s+RUNNING/)
    } finally {
      await c.ctr(['task', 'kill', '-s', 'SIGKILL', 'e2e-long']).catch(() => {})
      await new Promise(resolve => setTimeout(resolve, 500))
      await c.ctr(['task', 'delete', 'e2e-long']).catch(() => {})
      await c.ctr(['container', 'delete', 'e2e-long']).catch(() => {})
    }
  }, 600_000)
})
