import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, readdirSync } from 'node:fs'
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gunzipSync, gzipSync } from 'node:zlib'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { CID } from 'multiformats/cid'
import { IndexStore, collectBlock, createNode, walkDag } from '../../src/ipfs/index.js'
import { silentLogger } from '../../src/logging.js'
import { buildEstargz, TOC_DIGEST_ANNOTATION } from '../../src/estargz/index.js'
import { openImageReader, parseImageReference, pushImage, resolveImages, MediaType, type RegistryReference } from '../../src/oci/index.js'
import { IpfsSource } from '../../src/source/ipfs.js'
import { debianImageNeeds, debianPythonImage, type DebianPythonImage } from '../../scripts/fixtures/debian-image.js'
import { hasCommand, needs } from '../helpers/env.js'
import { cliPath, esgzRef } from '../../scripts/fixtures/tools.js'
import { startRegistry, type TestRegistry } from '../../scripts/fixtures/registry.js'
import { startFront, type Front } from '../oci/front.js'
import { allBlobs, blob, jsonBlob, makeImage, tagged, writeDockerArchive, writeLayout, writeOciArchive, type Blob, type TestImage } from '../../scripts/fixtures/oci-image.js'
import { sha256 } from '../../scripts/fixtures/digest.js'
import { makeTar } from '../../scripts/fixtures/tar.js'
import { zstdRawFrame } from '../helpers/forge.js'

function cli (args: string[], env?: NodeJS.ProcessEnv): { code: number, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', maxBuffer: 1 << 28, env: env != null ? { ...process.env, ...env } : undefined })
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr }
}

/** gzip level 1: the format, CIDs' stability and the dedup do not depend on it; the suite stays fast. */
const FAST = ['--level', '1']

interface PushJson { root: string, images: Array<{ layers: Array<{ digest: string, cid: string, tocDigest: string, diffID: string, size: number }>, config: { cid: string } }> }

/** Bytes and blocks of every block under a root, by CID. */
async function blocksOf (repo: string, root: string): Promise<Map<string, number>> {
  const node = await createNode({ repo, logger: silentLogger() })
  try {
    const { CID } = await import('multiformats/cid')
    const out = new Map<string, number>()
    for await (const b of walkDag(CID.parse(root), async (c: CID) => await collectBlock(node.localBlockstore.get(c)))) out.set(b.cid.toString(), b.bytes?.length ?? 0)
    return out
  } finally {
    await node.stop()
  }
}

/** Share of the second image's bytes already present in the first. */
function shared (a: Map<string, number>, b: Map<string, number>): number {
  let total = 0
  let common = 0
  for (const [cid, n] of b) { total += n; if (a.has(cid)) common += n }
  return common / total
}


/** Tests that push the 66 MB image three times: ~40 s each on 2 cores (push's speed is a benchmark's business, not a test's). */
const PUSHES_TIMEOUT_MS = 480_000

describe.skipIf(needs({ ...debianImageNeeds, go: hasCommand('go'), registry: hasCommand('docker-registry') }))('ipfs-estargz push (debootstrap + python3 image)', () => {
  let image: DebianPythonImage
  let dir: string
  let registry: TestRegistry | undefined
  let first: PushJson

  beforeAll(async () => {
    image = await debianPythonImage()
    dir = await mkdtemp(join(tmpdir(), 'push-e2e-'))
  }, 900_000)
  afterAll(async () => {
    await registry?.stop()
    await new Promise(resolve => setTimeout(resolve, 1500))
    await rm(dir, { recursive: true, force: true })
  })

  it('publishes every layer, verifiable by the reference from the bytes read back by CID', async () => {
    const r = cli(['push', `oci:${image.layout}`, '--repo', join(dir, 'a'), '--json', ...FAST])
    expect(r.code, r.stderr).toBe(0)
    first = JSON.parse(r.stdout) as PushJson
    expect(first.root).toMatch(/^baf/)
    expect(first.images[0].layers).toHaveLength(2)
    const node = await createNode({ repo: join(dir, 'a'), logger: silentLogger() })
    try {
      for (const l of first.images[0].layers) {
        const src = await IpfsSource.open(node.blocks, l.cid, { offline: true })
        const bytes = await src.read(0, await src.size())
        expect(bytes.length).toBe(l.size)
        await writeFile(join(dir, 'layer.esgz'), bytes)
        const v = spawnSync(esgzRef(), ['verify', join(dir, 'layer.esgz'), l.tocDigest], { encoding: 'utf8' })
        expect(v.status, v.stderr).toBe(0)
        expect(JSON.parse(v.stdout).regularFiles).toBeGreaterThan(100)
      }
      // config diff_ids match the layers' DiffIDs
      const index = IndexStore.open(join(dir, 'a'), { pins: node.helia.pins, localBlockstore: node.localBlockstore, logger: silentLogger() })
      expect(index.images.list().map(i => i.root)).toEqual([first.root])
      index.close()
    } finally {
      await node.stop()
    }
    const inspect = JSON.parse(cli(['image', 'inspect', first.root, '--repo', join(dir, 'a'), '--offline']).stdout) as { images: Array<{ config: { content: { rootfs: { diff_ids: string[] } } } }> }
    expect(inspect.images[0].config.content.rootfs.diff_ids).toEqual(first.images[0].layers.map(l => l.diffID))
  })

  it('shares most blocks between two builds of the same rootfs (member-aligned), far more than fixed-size chunking', async () => {
    const rebuilt = cli(['push', `oci:${image.rebuiltLayout}`, '--repo', join(dir, 'a'), ...FAST])
    expect(rebuilt.code, rebuilt.stderr).toBe(0)
    const aligned = shared(await blocksOf(join(dir, 'a'), first.root), await blocksOf(join(dir, 'a'), rebuilt.stdout.trim()))
    const k1 = cli(['push', `oci:${image.layout}`, '--repo', join(dir, 'k'), '--kubo-compatible', ...FAST]).stdout.trim()
    const k2 = cli(['push', `oci:${image.rebuiltLayout}`, '--repo', join(dir, 'k'), '--kubo-compatible', ...FAST]).stdout.trim()
    const kubo = shared(await blocksOf(join(dir, 'k'), k1), await blocksOf(join(dir, 'k'), k2))
    console.log(`bytes of the rebuilt image already stored: member-aligned ${(aligned * 100).toFixed(1)} %, kubo-compatible ${(kubo * 100).toFixed(1)} %`)
    expect(aligned).toBeGreaterThanOrEqual(0.5)
    expect(aligned).toBeGreaterThan(kubo)
  }, PUSHES_TIMEOUT_MS)

  it('writes --output oci:DIR and pushes --to a registry, and the registry copy is the same image', async () => {
    registry = await startRegistry()
    const out = join(dir, 'layout')
    const r = cli(['push', `oci:${image.layout}`, '--no-ipfs', '--output', `oci:${out}`, '--to', `docker://${registry.host}/test/debian:esgz`, '--plain-http', ...FAST])
    expect(r.code, r.stderr).toBe(0)
    const src = await openImageReader(`docker://${registry.host}/test/debian:esgz`, { plainHttp: true })
    try {
      const res = await resolveImages(src)
      expect(res.images[0].manifest.mediaType).toBe(MediaType.OciManifest)
      expect(res.images[0].layers.map(l => l.digest)).toEqual(first.images[0].layers.map(l => l.digest))
    } finally {
      await src.close()
    }
  })

  it('Ctrl-C leaves no image listed; bad sources fail with one clear line', async () => {
    // Its own TMPDIR: the push's temp dir appears right before it listens for Ctrl-C, so the
    // signal is sent once the push is under way, however loaded the machine is.
    const tmp = join(dir, 'ctrl-c-tmp')
    mkdirSync(tmp)
    const child = spawn(process.execPath, [cliPath, 'push', `oci:${image.layout}`, '--repo', join(dir, 'c')], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TMPDIR: tmp } })
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    for (let i = 0; i < 600 && readdirSync(tmp).length === 0; i++) await new Promise(resolve => setTimeout(resolve, 100))
    await new Promise(resolve => setTimeout(resolve, 500))
    child.kill('SIGINT')
    const code = await new Promise<number | null>(resolve => child.on('exit', resolve))
    expect(code).not.toBe(0)
    expect(stderr).toMatch(/abort/i)
    expect(readdirSync(tmp), 'the push removed its temp dir').toEqual([])
    expect(cli(['image', 'ls', '--repo', join(dir, 'c')]).stdout).toBe('')
    // its own TMPDIR again: other pushes on the machine may have temp dirs in the shared one
    const missing = cli(['push', `oci:${join(dir, 'nope')}`, '--repo', join(dir, 'c')], { TMPDIR: tmp })
    expect(missing.code).toBe(1)
    expect(readdirSync(tmp), 'no temp dir left behind by a source that fails to open').toEqual([])
    expect(missing.stderr.trim().split('\n')).toHaveLength(1)
    expect(missing.stderr).toMatch(/nope/)
  })
})

describe('ipfs-estargz push gives one root for one input', () => {
  let dir: string
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'push-same-')) })
  afterAll(async () => {
    await new Promise(resolve => setTimeout(resolve, 1500))
    await rm(dir, { recursive: true, force: true })
  })

  it('prints the same root CID for the same input, from any source form', async () => {
    // three layers that stay large compressed, so each is many gzip members and leaves
    const oci = makeImage({ seed: 'same', layerCount: 3, layerSize: 1_500_000, noise: true })
    const docker = makeImage({ seed: 'same', layerCount: 3, layerSize: 1_500_000, noise: true, docker: true })
    const layout = join(dir, 'layout')
    await writeLayout(layout, allBlobs(oci), [tagged(oci.manifest.descriptor, 'v1')])
    await writeOciArchive(join(dir, 'image.tar'), allBlobs(oci), [tagged(oci.manifest.descriptor, 'v1')])
    await writeDockerArchive(join(dir, 'docker.tar'), [{ image: docker, tags: ['same:v1'] }])
    const repo = join(dir, 'repo')
    const first = cli(['push', `oci:${layout}`, '--repo', repo, '--json', ...FAST])
    expect(first.code, first.stderr).toBe(0)
    const pushed = JSON.parse(first.stdout) as PushJson
    expect(pushed.images[0].layers).toHaveLength(3)
    const again = cli(['push', `oci:${layout}`, '--repo', repo, ...FAST])
    expect(again.code, again.stderr).toBe(0)
    expect(again.stdout.trim()).toBe(pushed.root)
    const archive = cli(['push', `oci-archive:${join(dir, 'image.tar')}`, '--repo', join(dir, 'other'), ...FAST])
    expect(archive.code, archive.stderr).toBe(0)
    expect(archive.stdout.trim()).toBe(pushed.root)
    const fromDocker = cli(['push', `docker-archive:${join(dir, 'docker.tar')}`, '--repo', repo, '--json', ...FAST])
    expect(fromDocker.code, fromDocker.stderr).toBe(0)
    // the same layer contents give the same converted layers (the manifests' media types differ)
    const dockerLayers = (JSON.parse(fromDocker.stdout) as PushJson).images[0].layers
    expect(dockerLayers.map(l => l.tocDigest)).toEqual(pushed.images[0].layers.map(l => l.tocDigest))
    expect(dockerLayers.map(l => l.cid)).toEqual(pushed.images[0].layers.map(l => l.cid))
  })
})

/**
 * Hostile sources, built here: every source blob is verified to its last byte (digest, size,
 * diffID) and the layer checked as a reader would check it before anything is named, whatever
 * the source type or compression. Each must fail with its code and leave nothing listed.
 */
describe('ipfs-estargz push refuses what does not verify, and lists nothing', () => {
  let dir: string
  const repo = (): string => join(dir, 'repo')
  const TAR = makeTar([{ name: 'greeting', data: 'hello\n' }, { name: 'padding.bin', data: Buffer.alloc(3000, 7) }])
  /** The same tar with `hello` → `jello`: same size, other bytes. */
  const jello = (b: Uint8Array): Buffer => {
    const out = Buffer.from(b)
    out[out.indexOf('hello')] = 0x6a
    return out
  }

  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'push-hostile-')) })
  afterAll(async () => {
    await new Promise(resolve => setTimeout(resolve, 1500))
    await rm(dir, { recursive: true, force: true })
  })

  /** Blobs of a one-layer image whose config gives `diffId`; the layer's file holds `stored`. */
  function image (layer: Blob, diffId: string, stored: Uint8Array = layer.bytes): { blobs: Blob[], manifest: Blob } {
    const config = jsonBlob(MediaType.OciConfig, { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [diffId] } })
    const manifest = jsonBlob(MediaType.OciManifest, { schemaVersion: 2, mediaType: MediaType.OciManifest, config: config.descriptor, layers: [layer.descriptor] })
    return { blobs: [{ descriptor: layer.descriptor, bytes: stored }, config, manifest], manifest }
  }
  let n = 0
  async function layout (img: { blobs: Blob[], manifest: Blob }): Promise<string> {
    const d = join(dir, `layout-${n++}`)
    await writeLayout(d, img.blobs, [tagged(img.manifest.descriptor, 'latest')])
    return `oci:${d}`
  }
  async function archive (img: { blobs: Blob[], manifest: Blob }): Promise<string> {
    const f = join(dir, `archive-${n++}.tar`)
    await writeOciArchive(f, img.blobs, [tagged(img.manifest.descriptor, 'latest')])
    return `oci-archive:${f}`
  }
  function refused (r: { code: number, stderr: string }, code: string): void {
    expect(r.code, r.stderr).toBe(1)
    expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1)
    expect(r.stderr).toContain(`(${code})`)
  }
  // Every refused push went to repo(): not one image may be listed there.
  afterEach(() => {
    const ls = cli(['image', 'ls', '--repo', repo()])
    expect(ls.code, ls.stderr).toBe(0)
    expect(ls.stdout).toBe('')
  })

  it('an uncompressed layer with hello → jello (same size), from oci: and oci-archive:', async () => {
    const layer = blob(MediaType.OciLayer, TAR)
    const img = image(layer, sha256(TAR), jello(TAR))
    refused(cli(['push', await layout(img), '--repo', repo(), ...FAST]), 'ERR_DIGEST_MISMATCH')
    refused(cli(['push', await archive(img), '--repo', repo(), ...FAST]), 'ERR_DIGEST_MISMATCH')
  })

  it('an uncompressed layer changed only after its end-of-archive marker', async () => {
    const layer = blob(MediaType.OciLayer, TAR)
    const stored = Buffer.from(TAR)
    stored[stored.length - 1] ^= 0x01 // the second zero block: a tar reader never looks at it
    refused(cli(['push', await layout(image(layer, sha256(TAR), stored)), '--repo', repo(), ...FAST]), 'ERR_DIGEST_MISMATCH')
  })

  it('a gzip layer with a flipped header byte (mtime, OS), which gzip\'s CRC does not cover', async () => {
    const gz = gzipSync(TAR)
    const layer = blob(MediaType.OciLayerGzip, gz)
    for (const at of [4, 9]) {
      const stored = Buffer.from(gz)
      stored[at] ^= 0x01
      expect(gunzipSync(stored).equals(TAR)).toBe(true) // still decompresses to the same tar
      refused(cli(['push', await layout(image(layer, sha256(TAR), stored)), '--repo', repo(), ...FAST]), 'ERR_DIGEST_MISMATCH')
      refused(cli(['push', await archive(image(layer, sha256(TAR), stored)), '--repo', repo(), ...FAST]), 'ERR_DIGEST_MISMATCH')
    }
  })

  it('a gzip layer with hello → jello: the digest mismatch is reported, not the CRC error it causes', async () => {
    const gz = gzipSync(TAR, { level: 0 }) // stored deflate blocks: the text is in the clear
    const layer = blob(MediaType.OciLayerGzip, gz)
    refused(cli(['push', await layout(image(layer, sha256(TAR), jello(gz))), '--repo', repo(), ...FAST]), 'ERR_DIGEST_MISMATCH')
  })

  it('a zstd layer with hello → jello', async () => {
    const zst = zstdRawFrame(TAR)
    const layer = blob(MediaType.OciLayerZstd, zst)
    refused(cli(['push', await layout(image(layer, sha256(TAR), jello(zst))), '--repo', repo(), ...FAST]), 'ERR_DIGEST_MISMATCH')
  })

  it('a config whose diff_id is not the layer\'s, for plain, gzip and zstd layers and a docker-archive', async () => {
    const wrong = sha256(jello(TAR))
    for (const layer of [blob(MediaType.OciLayer, TAR), blob(MediaType.OciLayerGzip, gzipSync(TAR)), blob(MediaType.OciLayerZstd, zstdRawFrame(TAR))]) {
      refused(cli(['push', await layout(image(layer, wrong)), '--repo', repo(), ...FAST]), 'ERR_DIFFID_MISMATCH')
    }
    // docker save with a gzip layer: its digest is computed from the archive, only the diffID can catch it
    const gz = gzipSync(TAR)
    const config = jsonBlob(MediaType.DockerConfig, { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [wrong] } })
    const f = join(dir, 'docker.tar')
    await writeDockerArchive(f, [{ image: { layers: [{ ...blob(MediaType.DockerLayerGzip, gz), diffId: wrong, tar: TAR }], config } as unknown as TestImage, tags: ['x/y:1'] }])
    refused(cli(['push', `docker-archive:${f}`, '--repo', repo(), ...FAST]), 'ERR_DIFFID_MISMATCH')
  })

  it('an eStargz layer kept as it is, whose diff_id is wrong (and the same layer with the right one is kept)', async () => {
    const parts: Uint8Array[] = []
    async function * once (): AsyncGenerator<Uint8Array> { yield TAR }
    const built = await buildEstargz(once(), async (s) => { parts.push(s.bytes) })
    const esgz = Buffer.concat(parts)
    const layer = blob(MediaType.OciLayerGzip, esgz, { annotations: { [TOC_DIGEST_ANNOTATION]: built.tocDigest } })
    const ok = cli(['push', await layout(image(layer, built.diffID)), '--repo', join(dir, 'other-repo'), '--json', ...FAST])
    expect(ok.code, ok.stderr).toBe(0)
    expect((JSON.parse(ok.stdout) as { images: Array<{ layers: Array<{ reused: boolean }> }> }).images[0].layers[0].reused).toBe(true)
    refused(cli(['push', await layout(image(layer, sha256(TAR))), '--repo', repo(), ...FAST]), 'ERR_DIFFID_MISMATCH')
    const stored = Buffer.from(esgz)
    stored[4] ^= 0x01 // the first member's mtime
    refused(cli(['push', await layout(image(layer, built.diffID, stored)), '--repo', repo(), ...FAST]), 'ERR_DIGEST_MISMATCH')
  })

  it('writes nothing into --output oci:DIR either', async () => {
    const out = join(dir, 'out')
    const layer = blob(MediaType.OciLayer, TAR)
    refused(cli(['push', await layout(image(layer, sha256(TAR), jello(TAR))), '--repo', repo(), '--output', `oci:${out}`, ...FAST]), 'ERR_DIGEST_MISMATCH')
    const blobs = await readdir(join(out, 'blobs', 'sha256')).catch(() => [])
    expect(blobs).toEqual([])
    const index = await readFile(join(out, 'index.json'), 'utf8').catch(() => undefined)
    if (index != null) expect((JSON.parse(index) as { manifests: unknown[] }).manifests).toEqual([])
  })

  it('layers a mount would refuse: a path through a symlink, a hardlink to a file not in the layer, an id the TOC cannot hold', async () => {
    const hostile = [
      makeTar([{ name: 'dir/', type: 'dir' }, { name: 'victim', type: 'symlink', linkName: '/dir' }, { name: 'victim/file', data: 'x' }]),
      makeTar([{ name: 'link', type: 'hardlink', linkName: 'not/in/layer' }]),
      makeTar([{ name: 'f', data: 'x', pax: { uid: '-1' } }])
    ]
    for (const tar of hostile) {
      const gz = gzipSync(tar)
      refused(cli(['push', await layout(image(blob(MediaType.OciLayerGzip, gz), sha256(tar))), '--repo', repo(), ...FAST]), 'ERR_MALFORMED_TOC')
    }
  })

  describe.skipIf(needs({ registry: hasCommand('docker-registry') }))('from docker://', () => {
    let registry: TestRegistry
    let front: Front
    const layer = blob(MediaType.OciLayer, TAR)
    beforeAll(async () => {
      registry = await startRegistry()
      const img = image(layer, sha256(TAR))
      await pushImage(parseImageReference(`docker://${registry.host}/test/hostile:1`) as RegistryReference, {
        blobs: img.blobs.slice(0, 2).map(b => ({ descriptor: b.descriptor, open: async function * () { yield b.bytes } })),
        manifests: [img.manifest]
      }, { plainHttp: true, dockerConfig: false })
      // flips the middle byte of the layer: inside padding.bin, a same-size change of its contents
      front = await startFront({ upstream: registry.host, tamper: req => req.url?.includes(layer.descriptor.digest) === true })
    })
    afterAll(async () => {
      await front?.stop()
      await registry?.stop()
    })

    it('a registry serving a layer with one byte changed', async () => {
      const r = await cliAsync(['push', `docker://${front.host}/test/hostile:1`, '--plain-http', '--repo', repo(), ...FAST])
      refused(r, 'ERR_DIGEST_MISMATCH')
      const good = await cliAsync(['push', `docker://${registry.host}/test/hostile:1`, '--plain-http', '--repo', join(dir, 'other-repo'), ...FAST])
      expect(good.code, good.stderr).toBe(0)
    })
  })
})

/** The CLI without blocking the event loop (for servers run by the test itself). */
async function cliAsync (args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  const child = spawn(process.execPath, [cliPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const code = await new Promise<number | null>(resolve => child.on('exit', resolve))
  return { code: code ?? -1, stdout, stderr }
}
