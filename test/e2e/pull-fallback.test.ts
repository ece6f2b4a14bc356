import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FuseManagerClient } from '../../src/fusemgr/index.js'
import { parseMountInfo } from '../../src/fs/mountinfo.js'
import { containerdNeeds, startContainerd, type PrivateContainerd } from '../../scripts/fixtures/containerd.js'
import { startDaemon, type RunningDaemon } from '../../scripts/fixtures/daemon.js'
import { hasCommand, hasFuse, needs } from '../helpers/env.js'
import { allBlobs, makeImage, tagged, writeLayout } from '../../scripts/fixtures/oci-image.js'
import { removeWorkDir } from '../../scripts/fixtures/work-dir.js'
import { runCli } from '../../scripts/fixtures/run.js'

interface Run { code: number, stdout: string, stderr: string }

async function cli (args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return await runCli(args, { env: { ...process.env, ...env }, timeoutMs: 60_000 })
}

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

interface PulledJson { name: string, layers: Array<{ chainId: string, lazy: boolean, fallbackReason?: string }> }

/** FUSE mounts at exactly this directory, from our own mount table. */
async function fuseAt (dir: string): Promise<string[]> {
  return parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8')).filter(m => m.mountpoint === dir && m.fstype.startsWith('fuse')).map(m => m.mountpoint)
}

/**
 * `pull` on a node whose peer holds the image: lazy layers whose footers and TOCs are opened all
 * at once before the Prepares, and, when a lazy mount takes longer than the mount timeout (the
 * peer is stopped with SIGSTOP: it answers nothing), a fallback to download + apply that `pull`
 * reports with its reason and that leaves no lazy mount behind. The CLI finds the daemon through
 * $IPFS_ESTARGZ_API, never through a repo of its own.
 */
describe.skipIf(needs({ ...containerdNeeds, fuse: hasFuse, fusermount: hasCommand('fusermount') }))('pull: warm layers, fallbacks reported, the daemon found without --repo', () => {
  let dir: string
  let home: string
  let a: RunningDaemon | undefined
  let b: RunningDaemon | undefined
  let ctrd: PrivateContainerd | undefined
  const images: Record<string, string> = {}
  const MOUNT_TIMEOUT_SEC = 2

  const env = (): NodeJS.ProcessEnv => ({ IPFS_ESTARGZ_API: join((b as RunningDaemon).root, 'api.sock'), HOME: home, IPFS_ESTARGZ_PATH: '' })

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pull-fallback-'))
    home = join(dir, 'home')
    await mkdir(home)
    a = await startDaemon({ root: join(dir, 'a'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    for (const seed of ['warm', 'stall', 'strict']) {
      const image = makeImage({ seed, layerCount: 3, layerSize: 300_000 })
      await writeLayout(join(dir, seed), allBlobs(image), [tagged(image.manifest.descriptor, 'latest')])
      const pushed = await cli(['push', `oci:${join(dir, seed)}`, '--repo', join(dir, 'a'), '--chunk-size', '65536'])
      if (pushed.code !== 0) throw new Error(pushed.stderr)
      images[seed] = pushed.stdout.trim()
    }
    const peer = (JSON.parse((await cli(['id', '--repo', join(dir, 'a')])).stdout) as { addresses: string[] }).addresses[0]
    b = await startDaemon({ root: join(dir, 'b'), peers: [peer], config: `[fs]\nbackground_fetch = false\n[snapshotter]\nremote_mount_timeout_sec = ${MOUNT_TIMEOUT_SEC}\n` })
    ctrd = await startContainerd({ proxyPlugins: { 'ipfs-estargz': b.address } })
  }, 300_000)

  afterAll(async () => {
    if (a?.proc.pid != null) try { process.kill(a.proc.pid, 'SIGCONT') } catch {}
    await ctrd?.stop()
    await b?.stop()
    await a?.stop()
    if (dir != null) await removeWorkDir(dir)
  })

  it('without --repo, push, pull and id run in the daemon $IPFS_ESTARGZ_API names; every Prepare finds its layer opened ahead', async () => {
    const c = ctrd as PrivateContainerd
    const started = Date.now()
    const pulled = await cli(['pull', `ipfs://${images.warm}`, '--address', c.address, '--json'], env())
    expect(pulled.code, pulled.stderr).toBe(0)
    console.log(`pull of 3 lazy layers: ${Date.now() - started} ms`)
    const result = JSON.parse(pulled.stdout) as PulledJson
    expect(result.layers.map(l => [l.lazy, l.fallbackReason])).toEqual([[true, undefined], [true, undefined], [true, undefined]])
    expect(pulled.stderr.trim().split('\n')).toEqual([1, 2, 3].map(i => expect.stringMatching(new RegExp(`^layer ${i}/3 [0-9a-f]{12}: lazy$`))))
    // the pulled image is pinned, lazily: what of it is stored here is kept from garbage collection
    const pin = await cli(['pin', 'ls', images.warm], env())
    expect(pin.code, pin.stderr).toBe(0)
    expect(JSON.parse(pin.stdout)).toMatchObject({ cid: images.warm, type: 'recursive', mode: 'lazy' })
    // each mount took the layer the pull had the FUSE manager open ahead
    const mountLines = (): Array<{ warm?: boolean }> => (b as RunningDaemon).log().split('\n').filter(l => l.includes('layer mounted lazily (FUSE manager)')).map(l => JSON.parse(l) as { warm?: boolean })
    for (let i = 0; i < 50 && mountLines().length < 3; i++) await sleep(100) // the daemon's log lines come asynchronously
    expect(mountLines().map(m => m.warm)).toEqual([true, true, true])
    const health = await new FuseManagerClient(join((b as RunningDaemon).root, 'fuse-manager.sock')).health()
    expect(health.warm).toMatchObject({ hits: 3, misses: 0 })
    // each opened from the TOC hint push annotated the layer with: no footer read
    expect(health.tocHints).toEqual({ given: 3, refused: 0 })
    // the CLI never opened a repo of its own
    expect(existsSync(join(home, '.ipfs-estargz'))).toBe(false)
    const id = await cli(['id'], env())
    expect(id.code, id.stderr).toBe(0)
    expect(JSON.parse(id.stdout)).toEqual(JSON.parse((await cli(['id', '--repo', (b as RunningDaemon).root])).stdout))
    const pushed = await cli(['push', `oci:${join(dir, 'warm')}`, '--chunk-size', '65536'], env())
    expect(pushed.code, pushed.stderr).toBe(0)
    expect((await cli(['image', 'ls'], env())).stdout).toContain(pushed.stdout.trim())
    expect(existsSync(join(home, '.ipfs-estargz'))).toBe(false)
  }, 120_000)

  it('a lazy mount that times out falls back: pull succeeds, says why per layer, the fallback is a warning, and no FUSE mount appears on its directory afterwards', async () => {
    const c = ctrd as PrivateContainerd
    const seed = a as RunningDaemon
    // the documents are on B already; the layers' blocks are only on A, which then answers nothing
    expect((await cli(['image', 'inspect', images.stall, '--repo', (b as RunningDaemon).root])).code).toBe(0)
    process.kill(seed.proc.pid as number, 'SIGSTOP')
    let pulled: Run
    try {
      const pulling = cli(['pull', `ipfs://${images.stall}`, '--repo', (b as RunningDaemon).root, '--address', c.address, '--json'])
      await sleep((MOUNT_TIMEOUT_SEC + 2) * 1000)
      process.kill(seed.proc.pid as number, 'SIGCONT')
      pulled = await pulling
    } finally {
      process.kill(seed.proc.pid as number, 'SIGCONT')
    }
    expect(pulled.code, pulled.stderr).toBe(0)
    const result = JSON.parse(pulled.stdout) as PulledJson
    const [first, ...rest] = result.layers
    expect(first.lazy).toBe(false)
    expect(first.fallbackReason).toMatch(new RegExp(`^mount-timeout: no lazy mount of \\w+ within ${MOUNT_TIMEOUT_SEC * 1000} ms$`))
    expect(rest.map(l => l.lazy)).toEqual([true, true])
    const lines = pulled.stderr.trim().split('\n')
    expect(lines[0]).toMatch(/^layer 1\/3 [0-9a-f]{12}: fell back to download \+ apply: mount-timeout: no lazy mount of \w+ within 2000 ms$/)
    expect(lines.slice(1)).toEqual([expect.stringMatching(/^layer 2\/3 .*: lazy$/), expect.stringMatching(/^layer 3\/3 .*: lazy$/)])
    await sleep(3_000) // longer than the stall: a lazy mount would have landed by now
    const warnings = (b as RunningDaemon).log().split('\n').filter(l => l.includes('"remote-snapshot-prepared":"false"')).map(l => JSON.parse(l) as { level: number, reason: string })
    expect(warnings).toEqual([expect.objectContaining({ level: 40, reason: 'mount-timeout' })])
    // the layer's snapshot is an ordinary directory holding the applied layer, and no lazy mount landed on it
    const sn = c.client.snapshots('ipfs-estargz')
    const view = await sn.view('check-fallback', first.chainId)
    try {
      const fs = view[0].source
      expect(fs).toMatch(/\/snapshots\/\d+\/fs$/)
      expect(await fuseAt(fs)).toEqual([])
      expect(await readFile(join(fs, 'dir0', 'file.txt'), 'utf8')).toBe('layer 0 of amd64 stall\n')
      const held = await new FuseManagerClient(join((b as RunningDaemon).root, 'fuse-manager.sock')).mounts()
      expect(held.map(m => m.mountpoint)).not.toContain(fs)
    } finally {
      await sn.remove('check-fallback')
    }
  }, 180_000)

  it('--require-lazy fails with ERR_LAYER_NOT_LAZY and the reason as soon as a layer falls back, and keeps nothing', async () => {
    const c = ctrd as PrivateContainerd
    const seed = a as RunningDaemon
    expect((await cli(['image', 'inspect', images.strict, '--repo', (b as RunningDaemon).root])).code).toBe(0)
    process.kill(seed.proc.pid as number, 'SIGSTOP')
    let pulled: Run
    try {
      pulled = await cli(['pull', `ipfs://${images.strict}`, '--repo', (b as RunningDaemon).root, '--address', c.address, '--require-lazy'])
    } finally {
      process.kill(seed.proc.pid as number, 'SIGCONT')
    }
    expect(pulled.code).toBe(1)
    expect(pulled.stderr.trim().split('\n').at(-1)).toMatch(/^ipfs-estargz: layer 1 \(sha256:[0-9a-f]{64}\) was not mounted lazily: mount-timeout: no lazy mount of \w+ within 2000 ms \(ERR_LAYER_NOT_LAZY\)$/)
    expect(await c.ctr(['images', 'ls', '-q'])).not.toContain(images.strict)
    expect(await c.ctr(['snapshots', '--snapshotter', 'ipfs-estargz', 'ls'])).not.toMatch(/extract-/)
    // the pin the pull made before unpacking went with it
    expect((await cli(['pin', 'ls', images.strict, '--repo', (b as RunningDaemon).root])).stderr).toContain('ERR_PIN_NOT_FOUND')
  }, 120_000)

  it('with $IPFS_ESTARGZ_API naming a dead daemon (or nothing), repo commands fail with one clear line and open no repo', async () => {
    const dead = await startDaemon({ root: join(dir, 'dead'), config: '[fuse_manager]\nenable = false\n' })
    await dead.kill() // kill -9 leaves its socket behind
    const api = join(dir, 'dead', 'api.sock')
    expect(existsSync(api)).toBe(true)
    for (const args of [['id'], ['image', 'ls'], ['push', `oci:${join(dir, 'warm')}`]]) {
      const r = await cli(args, { IPFS_ESTARGZ_API: api, HOME: home, IPFS_ESTARGZ_PATH: '' })
      expect(r.code, r.stderr).toBe(1)
      expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^ipfs-estargz: no daemon answers on \$IPFS_ESTARGZ_API \(.*dead\/api\.sock\): .*start the daemon, or name a repo .* \(ERR_DAEMON_UNREACHABLE\)$/)])
    }
    const missing = await cli(['id'], { IPFS_ESTARGZ_API: join(dir, 'nowhere.sock'), HOME: home, IPFS_ESTARGZ_PATH: '' })
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/no daemon socket at \$IPFS_ESTARGZ_API .*ERR_DAEMON_UNREACHABLE/)
    expect(existsSync(join(home, '.ipfs-estargz'))).toBe(false)
  }, 120_000)
})
