/**
 * The reference stargz snapshotter pulls an image lazily through our mirror's registry API, as
 * it would from any registry, and runs it: it reads only part of the layers. Run by
 * `npm run test:reference`, which stands the reference stack up first; here a missing stack is
 * a failure, never a skip.
 */
import { execFile, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openRepo, type OpenRepo } from '../../src/ipfs/index.js'
import { silentLogger } from '../../src/logging.js'
import type { MirrorServer } from '../../src/mirror/index.js'
import { startMirror } from '../mirror/helpers.js'
import { cliPath, refstackDir } from '../../scripts/fixtures/tools.js'

const run = promisify(execFile)
const image = join(refstackDir, 'image', 'oci')
const socket = join(refstackDir, 'containerd', 'containerd.sock')
const NS = 'ipfs-estargz-mirror-test'

async function ctrRemote (args: string[], timeout = 300_000): Promise<string> {
  try {
    return (await run('ctr-remote', ['--address', socket, '--namespace', NS, ...args], { timeout, maxBuffer: 1 << 24 })).stdout
  } catch (err) {
    const e = err as { stderr?: string, stdout?: string, message: string }
    throw new Error(`ctr-remote ${args.join(' ')}: ${e.stderr ?? ''}${e.stdout ?? ''} (${e.message})`)
  }
}

describe('the reference stargz snapshotter pulls through the mirror lazily (reference stack)', () => {
  let dir: string
  let repo: OpenRepo | undefined
  let mirror: MirrorServer | undefined
  let root: string
  let layerBytes: number
  let ref: string

  beforeAll(async () => {
    for (const p of [image, socket]) {
      if (!existsSync(p)) throw new Error(`${p} is missing: the reference stack is not set up in ${refstackDir} (npm run test:reference sets it up)`)
    }
    dir = await mkdtemp(join(tmpdir(), 'mirror-ref-'))
    const pushed = spawnSync(process.execPath, [cliPath, 'push', `oci:${image}`, '--repo', join(dir, 'repo'), '--json'], { encoding: 'utf8', maxBuffer: 1 << 26 })
    if (pushed.status !== 0) throw new Error(pushed.stderr)
    const json = JSON.parse(pushed.stdout) as { root: string, images: Array<{ layers: Array<{ size: number }> }> }
    root = json.root
    layerBytes = json.images[0].layers.reduce((n, l) => n + l.size, 0)
    repo = await openRepo({ logger: silentLogger() }, { repo: join(dir, 'repo') })
    ;({ mirror } = await startMirror({ repo }))
    ref = `${mirror.url.replace('http://', '')}/ipfs/${root}:latest`
  }, 600_000)

  afterAll(async () => {
    await ctrRemote(['containers', 'rm', 'mirror-ref-1']).catch(() => {})
    await ctrRemote(['images', 'rm', '--sync', ref]).catch(() => {})
    await run('ctr', ['--address', socket, 'namespaces', 'rm', NS]).catch(() => {})
    await mirror?.stop()
    await repo?.close()
    if (dir != null) await rm(dir, { recursive: true, force: true })
  })

  it('rpull is lazy, run reads a part of the layers through Range requests, and the app runs', async () => {
    await ctrRemote(['images', 'rpull', '--plain-http', ref])
    const afterPull = (mirror as MirrorServer).stats()
    const out = await ctrRemote(['run', '--rm', '--snapshotter', 'stargz', ref, 'mirror-ref-1'])
    const afterRun = (mirror as MirrorServer).stats()
    console.log(`reference stargz snapshotter through the mirror: ${(afterPull.blobBytes / 1e6).toFixed(2)} MB after rpull, ${(afterRun.blobBytes / 1e6).toFixed(2)} MB after run, of ${(layerBytes / 1e6).toFixed(1)} MB of layers; ${afterRun.ranges} range requests of ${afterRun.blobs} blob answers`)
    expect(out).toMatch(/"ok": true/)
    expect(afterRun.ranges).toBeGreaterThan(0)
    expect(afterRun.blobBytes).toBeLessThan(0.5 * layerBytes)
  }, 600_000)
})
