import { createHash, randomInt } from 'node:crypto'
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { IPFS_CID_ANNOTATION, type Index, type Manifest } from '../../src/oci/index.js'
import { containerdNeeds, startContainerd, type PrivateContainerd } from '../../scripts/fixtures/containerd.js'
import { startDaemon, type RunningDaemon } from '../../scripts/fixtures/daemon.js'
import { debianImageNeeds, debianPythonImage } from '../../scripts/fixtures/debian-image.js'
import { freePort, startRegistry, type TestRegistry } from '../../scripts/fixtures/registry.js'
import { hasCommand, hasFuse, needs } from '../helpers/env.js'
import { removeWorkDir } from '../../scripts/fixtures/work-dir.js'
import { runCli, type RunResult } from '../../scripts/fixtures/run.js'

async function cli (args: string[], input?: string): Promise<RunResult<string>> {
  return await runCli(args, { input })
}

const sha256 = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`

interface PushJson { root: string, rootDigest: string, registryDigest?: string, images: Array<{ manifest: { digest: string, cid: string }, config: { digest: string, cid: string }, layers: Array<{ digest: string, cid: string, size: number }> }> }

/**
 * Mirror mode end to end: a daemon with `[mirror]` holds the debootstrap + python3 image, pushed
 * with IPFS on and `--to docker://` into Debian's docker-registry; a stock containerd (its own
 * overlayfs snapshotter, no plugin of ours) pulls `HOST:PORT/ipfs/<cid>` through the mirror with
 * the hosts.toml `containerd-config --mirror` prints, and runs it.
 */
describe.skipIf(needs({ ...containerdNeeds, ...debianImageNeeds, registry: hasCommand('docker-registry'), fuse: hasFuse, fusermount: hasCommand('fusermount') }))('mirror mode with stock containerd and a stock registry', () => {
  let dir: string
  let daemon: RunningDaemon | undefined
  let ctrd: PrivateContainerd | undefined
  let registry: TestRegistry | undefined
  let mirror: string
  let pushed: PushJson
  const repo = (): string => join(dir, 'a')

  beforeAll(async () => {
    const image = await debianPythonImage()
    dir = await mkdtemp(join(tmpdir(), 'e2e-mirror-'))
    registry = await startRegistry()
    const port = await freePort()
    mirror = `127.0.0.1:${port}`
    daemon = await startDaemon({ root: repo(), args: ['--mirror', mirror] })
    expect(daemon.log()).toContain(`mirror on http://${mirror}`)
    const r = await cli(['push', `oci-archive:${image.archive}`, '--repo', repo(), '--json', '--to', `docker://${registry.host}/test/debian:esgz`, '--plain-http'])
    if (r.code !== 0) throw new Error(`push failed: ${r.stderr}`)
    pushed = JSON.parse(r.stdout) as PushJson
    ctrd = await startContainerd()
  }, 900_000)

  afterAll(async () => {
    await ctrd?.stop()
    await daemon?.stop()
    await registry?.stop()
    if (dir != null) await removeWorkDir(dir)
  })

  it('stock containerd pulls HOST:PORT/ipfs/<cid> through the mirror (hosts.toml from containerd-config --mirror) and runs it; a tagged name too', async () => {
    const c = ctrd as PrivateContainerd
    const hostsDir = join(dir, 'certs.d')
    const toml = await cli(['containerd-config', '--mirror', '--address', mirror])
    expect(toml.code, toml.stderr).toBe(0)
    expect(toml.stdout).toContain(`[host."http://${mirror}"]`)
    await mkdir(join(hostsDir, mirror), { recursive: true })
    await writeFile(join(hostsDir, mirror, 'hosts.toml'), toml.stdout)
    const ref = `${mirror}/ipfs/${pushed.root}:latest`
    await c.ctr(['image', 'pull', '--hosts-dir', hostsDir, ref], { timeoutMs: 300_000 })
    const out = await c.ctr(['run', '--rm', ref, 'mirror-1', 'python3', '-c', 'print(6*7)'])
    expect(out.trim()).toBe('42')
    // the image containerd holds is the IPFS copy: same root digest
    expect(await c.ctr(['images', 'ls'])).toContain(pushed.rootDigest)

    const tagged = await cli(['tag', pushed.root, 'test/debian:v1', '--repo', repo()])
    expect(tagged.code, tagged.stderr).toBe(0)
    expect((await cli(['image', 'ls', '--repo', repo()])).stdout).toContain('"tags":["test/debian:v1"]')
    await c.ctr(['image', 'pull', '--hosts-dir', hostsDir, `${mirror}/test/debian:v1`], { timeoutMs: 300_000 })
    const out2 = await c.ctr(['run', '--rm', `${mirror}/test/debian:v1`, 'mirror-2', 'python3', '-c', 'print(6*7)'])
    expect(out2.trim()).toBe('42')
    // a name nobody tagged: 404 NAME_UNKNOWN, so containerd would ask its next host
    await expect(c.ctr(['image', 'pull', '--hosts-dir', hostsDir, `${mirror}/test/nosuch:v1`])).rejects.toThrow(/not found/)
  }, 600_000)

  it('push --to docker:// with IPFS on landed in docker-registry: CIDs as annotations, no ipfs:// urls; stock containerd pulls and runs that copy', async () => {
    const reg = registry as TestRegistry
    expect(pushed.registryDigest).toMatch(/^sha256:/)
    const head = await fetch(`${reg.url}/v2/test/debian/manifests/esgz`, { method: 'HEAD', headers: { accept: 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json' } })
    expect(head.headers.get('docker-content-digest')).toBe(pushed.registryDigest)
    // walk the registry copy: no ipfs:// anywhere, every layer's CID the IPFS copy's
    const getJson = async (digest: string): Promise<{ text: string, json: unknown }> => {
      const res = await fetch(`${reg.url}/v2/test/debian/manifests/${digest}`, { headers: { accept: 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json' } })
      const text = await res.text()
      return { text, json: JSON.parse(text) }
    }
    const root = await getJson(pushed.registryDigest as string)
    expect(root.text).not.toContain('ipfs://')
    const manifests: Manifest[] = []
    if (Array.isArray((root.json as Index).manifests)) {
      for (const m of (root.json as Index).manifests) {
        const got = await getJson(m.digest)
        expect(got.text).not.toContain('ipfs://')
        manifests.push(got.json as Manifest)
      }
    } else {
      manifests.push(root.json as Manifest)
    }
    const cids = new Map(pushed.images.flatMap(i => [...i.layers, i.config]).map(l => [l.digest, l.cid]))
    for (const m of manifests) {
      for (const l of [...m.layers, m.config]) expect(l.annotations?.[IPFS_CID_ANNOTATION], l.digest).toBe(cids.get(l.digest))
    }
    // the IPFS copy is unchanged: pull by CID (inspect through the daemon) still finds every CID
    const inspect = await cli(['image', 'inspect', pushed.root, '--repo', repo()])
    expect(inspect.code, inspect.stderr).toBe(0)
    for (const cid of cids.values()) expect(inspect.stdout).toContain(cid)
    // the registry copy is a valid image for a stock client
    const c = ctrd as PrivateContainerd
    const ref = `${reg.host}/test/debian:esgz`
    await c.ctr(['image', 'pull', '--plain-http', ref], { timeoutMs: 300_000 })
    expect((await c.ctr(['run', '--rm', ref, 'mirror-3', 'python3', '-c', 'print(6*7)'])).trim()).toBe('42')
  }, 600_000)

  it('byte ranges of the mirror equal the registry\'s blob (same digest) at random offsets, the last byte, and 416 past the end; download speed of both', async () => {
    const reg = registry as TestRegistry
    const layer = pushed.images[0].layers.reduce((a, b) => (a.size > b.size ? a : b))
    const timed = async (url: string): Promise<{ bytes: Buffer, mbps: number }> => {
      const t0 = process.hrtime.bigint()
      const res = await fetch(url)
      const bytes = Buffer.from(await res.arrayBuffer())
      const s = Number(process.hrtime.bigint() - t0) / 1e9
      return { bytes, mbps: bytes.length / 1e6 / s }
    }
    const fromRegistry = await timed(`${reg.url}/v2/test/debian/blobs/${layer.digest}`)
    const fromMirror = await timed(`http://${mirror}/v2/ipfs/${pushed.root}/blobs/${layer.digest}`)
    expect(sha256(fromRegistry.bytes)).toBe(layer.digest)
    expect(Buffer.compare(fromMirror.bytes, fromRegistry.bytes)).toBe(0)
    // a second round each, warm
    const r2 = await timed(`${reg.url}/v2/test/debian/blobs/${layer.digest}`)
    const m2 = await timed(`http://${mirror}/v2/ipfs/${pushed.root}/blobs/${layer.digest}`)
    console.log(`blob of ${(layer.size / 1e6).toFixed(1)} MB on loopback: docker-registry ${r2.mbps.toFixed(0)} MB/s, mirror ${m2.mbps.toFixed(0)} MB/s (${(m2.mbps / r2.mbps).toFixed(2)}×)`)
    const src = fromRegistry.bytes
    const ranges: Array<[number, number]> = [[src.length - 1, src.length - 1], [0, 99]]
    for (let i = 0; i < 10; i++) { const a = randomInt(src.length); ranges.push([a, Math.min(src.length - 1, a + randomInt(4 << 20))]) }
    for (const [a, b] of ranges) {
      const res = await fetch(`http://${mirror}/v2/ipfs/${pushed.root}/blobs/${layer.digest}`, { headers: { range: `bytes=${a}-${b}` } })
      expect(res.status).toBe(206)
      expect(Buffer.compare(Buffer.from(await res.arrayBuffer()), src.subarray(a, b + 1)), `${a}-${b}`).toBe(0)
    }
    const past = await fetch(`http://${mirror}/v2/ipfs/${pushed.root}/blobs/${layer.digest}`, { headers: { range: `bytes=${src.length}-` } })
    expect(past.status).toBe(416)
    await past.arrayBuffer()
    // the gateway: the layer as a CAR reads back to the same bytes
    const { CarReader } = await import('@ipld/car/reader')
    const car = await CarReader.fromBytes(Buffer.from(await (await fetch(`http://${mirror}/ipfs/${layer.cid}?format=car&dag-scope=entity`)).arrayBuffer()))
    const { UnixfsFileReader, verifyBlock } = await import('../../src/ipfs/index.js')
    const blocks = new Map<string, Uint8Array>()
    for await (const b of car.blocks()) { verifyBlock(b.cid, b.bytes); blocks.set(b.cid.toString(), b.bytes) }
    const { CID } = await import('multiformats/cid')
    const reader = await UnixfsFileReader.open(CID.parse(layer.cid), async (c) => blocks.get(c.toString()) as Uint8Array)
    expect(sha256(await reader.read(0, reader.size))).toBe(layer.digest)
  }, 300_000)
})
