import { spawn, spawnSync } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { CID } from 'multiformats/cid'
import { IndexStore, collectBlock, createNode, walkDag } from '../../src/ipfs/index.js'
import { silentLogger } from '../../src/logging.js'
import { openImageSource, resolveImages, MediaType } from '../../src/oci/index.js'
import { IpfsSource } from '../../src/source/ipfs.js'
import { debianImageNeeds, debianPythonImage, type DebianPythonImage } from '../helpers/images.js'
import { hasCommand, needs } from '../helpers/env.js'
import { cliPath, esgzRef } from '../helpers/tools.js'
import { startRegistry, type TestRegistry } from '../oci/registry-fixture.js'

function cli (args: string[]): { code: number, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', maxBuffer: 1 << 28 })
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
        const src = await IpfsSource.open(node.helia, l.cid, { offline: true })
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

  it('prints the same root CID for the same input, from any source form', () => {
    const again = cli(['push', `oci:${image.layout}`, '--repo', join(dir, 'a'), ...FAST])
    expect(again.code, again.stderr).toBe(0)
    expect(again.stdout.trim()).toBe(first.root)
    const archive = cli(['push', `oci-archive:${image.archive}`, '--repo', join(dir, 'a'), ...FAST])
    expect(archive.stdout.trim()).toBe(first.root)
    const docker = cli(['push', `docker-archive:${image.dockerArchive}`, '--repo', join(dir, 'a'), '--json', ...FAST])
    expect(docker.code, docker.stderr).toBe(0)
    // same layer contents: the converted layers are identical (configs/manifests may differ in media type)
    expect((JSON.parse(docker.stdout) as PushJson).images[0].layers.map(l => l.tocDigest)).toEqual(first.images[0].layers.map(l => l.tocDigest))
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
  })

  it('writes --output oci:DIR and pushes --to a registry, and the registry copy is the same image', async () => {
    registry = await startRegistry()
    const out = join(dir, 'layout')
    const r = cli(['push', `oci:${image.layout}`, '--no-ipfs', '--output', `oci:${out}`, '--to', `docker://${registry.host}/test/debian:esgz`, '--plain-http', ...FAST])
    expect(r.code, r.stderr).toBe(0)
    const src = await openImageSource(`docker://${registry.host}/test/debian:esgz`, { plainHttp: true })
    try {
      const res = await resolveImages(src)
      expect(res.images[0].manifest.mediaType).toBe(MediaType.OciManifest)
      expect(res.images[0].layers.map(l => l.digest)).toEqual(first.images[0].layers.map(l => l.digest))
    } finally {
      await src.close()
    }
  })

  it('Ctrl-C leaves no image listed; bad sources fail with one clear line', async () => {
    const child = spawn(process.execPath, [cliPath, 'push', `oci:${image.layout}`, '--repo', join(dir, 'c')], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    await new Promise(resolve => setTimeout(resolve, 3000))
    child.kill('SIGINT')
    const code = await new Promise<number | null>(resolve => child.on('exit', resolve))
    expect(code).not.toBe(0)
    expect(stderr).toMatch(/abort/i)
    expect(cli(['image', 'ls', '--repo', join(dir, 'c')]).stdout).toBe('')
    const temps = (): string[] => readdirSync(tmpdir()).filter(n => n.startsWith('ipfs-estargz-push-'))
    const before = temps()
    const missing = cli(['push', `oci:${join(dir, 'nope')}`, '--repo', join(dir, 'c')])
    expect(missing.code).toBe(1)
    expect(temps()).toEqual(before) // no temp dir left behind by a source that fails to open
    expect(missing.stderr.trim().split('\n')).toHaveLength(1)
    expect(missing.stderr).toMatch(/nope/)
  })
})
