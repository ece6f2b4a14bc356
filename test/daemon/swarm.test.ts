import { spawn } from 'node:child_process'
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDaemon, type RunningDaemon } from '../../scripts/fixtures/daemon.js'
import { allBlobs, makeImage, tagged, writeLayout } from '../../scripts/fixtures/oci-image.js'
import { cliPath } from '../../scripts/fixtures/tools.js'
import { runCli, type RunResult } from '../../scripts/fixtures/run.js'

/**
 * A private swarm between real daemons: `swarm key generate` makes the key, `[ipfs]
 * swarm_key_file` names it; daemons with the same key fetch from each other, one with another
 * key or none cannot connect; a bad key file stops the daemon at start with its error code.
 */

async function cli (args: string[]): Promise<RunResult<string>> {
  return await runCli(args, { timeoutMs: 60_000 })
}

/** Runs the daemon expecting it to fail at start: its exit code and stderr. */
async function failedStart (root: string, config: string): Promise<{ code: number | null, stderr: string }> {
  await writeFile(`${root}.config.toml`, config)
  const proc = spawn(process.execPath, [cliPath, 'daemon', '--root', root, '--address', join(root, 's.sock'), '--config', `${root}.config.toml`], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  proc.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const timer = setTimeout(() => proc.kill('SIGKILL'), 30_000)
  const code = await new Promise<number | null>(resolve => proc.on('exit', resolve))
  clearTimeout(timer)
  return { code, stderr }
}

const BASE = '[fuse_manager]\nenable = false\n[prefetch]\nenable = false\n[ipfs]\ninbound_connections_per_sec = 1000\n'

describe('private swarm between daemons', () => {
  let dir: string
  const daemons: RunningDaemon[] = []
  let a: RunningDaemon
  let root: string

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'h14-swarm-'))
    const gen = await cli(['swarm', 'key', 'generate'])
    expect(gen.code).toBe(0)
    await writeFile(join(dir, 'swarm.key'), gen.stdout, { mode: 0o600 })
    await writeFile(join(dir, 'other.key'), (await cli(['swarm', 'key', 'generate'])).stdout, { mode: 0o600 })
    const image = makeImage({ layerCount: 2, layerSize: 300_000, noise: true })
    await writeLayout(join(dir, 'img'), allBlobs(image), [tagged(image.manifest.descriptor, 'latest')])
    a = await startDaemon({ root: join(dir, 'a'), listen: ['/ip4/127.0.0.1/tcp/0'], config: `${BASE}swarm_key_file = "${join(dir, 'swarm.key')}"\n` })
    daemons.push(a)
    const pushed = await cli(['push', `oci:${join(dir, 'img')}`, '--repo', join(dir, 'a'), '--json'])
    if (pushed.code !== 0) throw new Error(pushed.stderr)
    root = (JSON.parse(pushed.stdout) as { root: string }).root
  }, 120_000)

  afterAll(async () => {
    for (const d of daemons.reverse()) await d.stop().catch(() => {})
    if (dir != null) await rm(dir, { recursive: true, force: true })
  })

  it('refuses to start with a malformed, unreadable or group/world-readable key file, with the error\'s code', async () => {
    await writeFile(join(dir, 'bad.key'), '/key/swarm/psk/1.0.0/\n/base16/\nnothex\n', { mode: 0o600 })
    await writeFile(join(dir, 'open.key'), (await cli(['swarm', 'key', 'generate'])).stdout, { mode: 0o644 })
    const cases: Array<[string, string]> = [
      [join(dir, 'bad.key'), 'ERR_SWARM_KEY_MALFORMED'],
      [join(dir, 'open.key'), 'ERR_SWARM_KEY_PERMISSIONS'],
      [join(dir, 'missing.key'), 'ERR_SWARM_KEY_UNREADABLE']
    ]
    for (const [i, [file, code]] of cases.entries()) {
      const r = await failedStart(join(dir, `bad-${i}`), `${BASE}listen = ["/ip4/127.0.0.1/tcp/0"]\nswarm_key_file = "${file}"\n`)
      expect(r.code, r.stderr).toBe(1)
      expect(r.stderr).toContain(code)
      expect(r.stderr).not.toContain('snapshotter on') // never served
      await expect(access(join(dir, `bad-${i}`, 's.sock'))).rejects.toThrow()
    }
  }, 120_000)

  it('daemons with the same key fetch from each other; one with another key or none cannot connect', async () => {
    const peer = (JSON.parse((await cli(['id', '--repo', join(dir, 'a')])).stdout) as { addresses: string[] }).addresses[0]
    const b = await startDaemon({ root: join(dir, 'b'), peers: [peer], config: `${BASE}swarm_key_file = "${join(dir, 'swarm.key')}"\n` })
    daemons.push(b)
    const c = await startDaemon({ root: join(dir, 'c'), peers: [peer], config: `${BASE}swarm_key_file = "${join(dir, 'other.key')}"\n` })
    daemons.push(c)
    const d = await startDaemon({ root: join(dir, 'd'), peers: [peer], config: BASE })
    daemons.push(d)

    const inspected = await cli(['image', 'inspect', root, '--repo', join(dir, 'b')])
    expect(inspected.code, inspected.stderr).toBe(0)
    expect((JSON.parse(inspected.stdout) as { images: Array<{ layers: unknown[] }> }).images[0].layers).toHaveLength(2)
    const bPeers = JSON.parse((await cli(['peers', '--json', '--repo', join(dir, 'b')])).stdout) as Array<{ id: string, bytesReceived: number }>
    const aId = peer.split('/p2p/')[1]
    expect(bPeers.map(p => p.id)).toEqual([aId])
    expect(bPeers[0].bytesReceived).toBeGreaterThan(0)
    const aStats = JSON.parse((await cli(['stats', '--json', '--repo', join(dir, 'a')])).stdout) as { served: { bytes: number }, peers: Record<string, { bytesServed: number }> }
    expect(aStats.served.bytes).toBe(bPeers[0].bytesReceived)
    expect(Object.values(aStats.peers).map(p => p.bytesServed)).toEqual([bPeers[0].bytesReceived])

    for (const [n, where] of [[c, 'c'], [d, 'd']] as const) {
      expect(JSON.parse((await cli(['peers', '--json', '--repo', join(dir, where)])).stdout)).toEqual([])
      expect(n.log()).toContain('cannot connect to static peer')
      const stats = JSON.parse((await cli(['stats', '--json', '--repo', join(dir, where)])).stdout) as { fetched: { exchange: { bytes: number }, bitswap: { bytes: number } } }
      expect(stats.fetched.exchange.bytes + stats.fetched.bitswap.bytes).toBe(0)
    }
    const aPeers = JSON.parse((await cli(['peers', '--json', '--repo', join(dir, 'a')])).stdout) as Array<{ id: string }>
    expect(aPeers.map(p => p.id)).toEqual([JSON.parse((await cli(['id', '--repo', join(dir, 'b')])).stdout).id])
  }, 120_000)
})
