import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createGunzip } from 'node:zlib'
import { describe, expect, it, beforeAll } from 'vitest'
import { readTarStream } from '../../src/estargz/index.js'
import { needs } from './env.js'
import { debianImageNeeds, debianPythonImage, fixtureScript, type DebianPythonImage } from './images.js'

interface Descriptor { mediaType: string, digest: string, size: number, annotations?: Record<string, string> }
interface Manifest { mediaType: string, config: Descriptor, layers: Descriptor[] }
interface Config { os: string, architecture: string, config: { Cmd: string[] }, rootfs: { type: string, diff_ids: string[] }, history: unknown[] }
interface Entry { name: string, type: string, size: number, mtime: number, linkName: string, digest: string }

const sha256 = (b: Uint8Array): string => 'sha256:' + createHash('sha256').update(b).digest('hex')
const blobPath = (layout: string, digest: string): string => join(layout, 'blobs', 'sha256', digest.slice('sha256:'.length))

async function fileDigest (path: string, gunzip = false): Promise<string> {
  const h = createHash('sha256')
  const input = createReadStream(path)
  for await (const b of gunzip ? input.pipe(createGunzip()) : input) h.update(b as Buffer)
  return 'sha256:' + h.digest('hex')
}

/** Every entry of a gzip layer blob, with the sha256 of its payload. */
async function entries (path: string): Promise<Entry[]> {
  const out: Entry[] = []
  for await (const e of readTarStream(createReadStream(path).pipe(createGunzip()))) {
    const h = createHash('sha256')
    for await (const piece of e.data()) h.update(piece)
    const { name, type, size, mtime, linkName } = e.header
    out.push({ name, type, size, mtime, linkName, digest: h.digest('hex') })
  }
  return out
}

async function readLayout (layout: string): Promise<{ index: { manifests: Descriptor[] }, manifest: Manifest, config: Config }> {
  const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: Descriptor[] }
  const manifest = JSON.parse(await readFile(blobPath(layout, index.manifests[0].digest), 'utf8')) as Manifest
  const config = JSON.parse(await readFile(blobPath(layout, manifest.config.digest), 'utf8')) as Config
  return { index, manifest, config }
}

describe.skipIf(needs(debianImageNeeds))('debianPythonImage (scripts/fixtures/debootstrap-image.sh)', () => {
  let img: DebianPythonImage
  let layers: Entry[][]

  beforeAll(async () => {
    img = await debianPythonImage()
    const { manifest } = await readLayout(img.layout)
    layers = await Promise.all(manifest.layers.map(async l => await entries(blobPath(img.layout, l.digest))))
  })

  it('is an OCI layout tagged latest whose descriptors match their blobs', async () => {
    const { index, manifest, config } = await readLayout(img.layout)
    expect(JSON.parse(await readFile(join(img.layout, 'oci-layout'), 'utf8'))).toEqual({ imageLayoutVersion: '1.0.0' })
    expect(index.manifests).toHaveLength(1)
    expect(index.manifests[0].annotations?.['org.opencontainers.image.ref.name']).toBe('latest')
    expect(manifest.mediaType).toBe('application/vnd.oci.image.manifest.v1+json')
    expect(manifest.layers.map(l => l.mediaType)).toEqual(Array(2).fill('application/vnd.oci.image.layer.v1.tar+gzip'))
    for (const d of [index.manifests[0], manifest.config, ...manifest.layers]) {
      const bytes = await readFile(blobPath(img.layout, d.digest))
      expect(bytes.length).toBe(d.size)
      expect(sha256(bytes)).toBe(d.digest)
    }
    expect(config).toMatchObject({ os: 'linux', architecture: 'amd64', config: { Cmd: ['python3'] }, rootfs: { type: 'layers' } })
    expect(config.history).toHaveLength(2)
    const diffIds = await Promise.all(manifest.layers.map(async l => await fileDigest(blobPath(img.layout, l.digest), true)))
    expect(config.rootfs.diff_ids).toEqual(diffIds)
  })

  it('has a debootstrap base layer and a python3 layer with OCI whiteouts', () => {
    const [base, py] = layers.map(l => new Map(l.map(e => [e.name, e])))
    for (const l of layers) {
      const names = l.map(e => e.name)
      expect(names.every(n => !n.startsWith('./') && !n.startsWith('/'))).toBe(true)
    }
    expect(base.get('usr/bin/dpkg')?.type).toBe('reg')
    expect(base.get('bin')).toMatchObject({ type: 'symlink', linkName: 'usr/bin' })
    expect(base.get('dev/')?.type ?? base.get('dev')?.type).toBe('dir')
    expect([...base.keys()].filter(n => n.startsWith('dev/') && n !== 'dev/')).toEqual([])
    expect(base.get('var/log/bootstrap.log')?.type).toBe('reg')
    expect([...base.values()].some(e => e.type === 'hardlink')).toBe(true)
    expect(base.has('usr/bin/python3')).toBe(false)

    expect(py.get('usr/bin/python3')).toMatchObject({ type: 'symlink', linkName: 'python3.11' })
    expect(py.get('usr/bin/python3.11')?.type).toBe('reg')
    for (const mod of ['json/__init__.py', 'email/parser.py', 'http/client.py', 'decimal.py', 'asyncio/__init__.py', 'sqlite3/__init__.py']) {
      expect(py.has(`usr/lib/python3.11/${mod}`), mod).toBe(true)
    }
    // deleted base file -> .wh.<name>; directory removed and recreated -> opaque marker
    expect(py.get('var/log/.wh.bootstrap.log')).toMatchObject({ type: 'reg', size: 0 })
    expect(py.get('var/cache/apt/archives/.wh..wh..opq')).toMatchObject({ type: 'reg', size: 0 })
    // opaque markers only where the base really has that directory
    for (const n of py.keys()) {
      if (n.endsWith('/.wh..wh..opq')) expect(base.has(n.slice(0, -'.wh..wh..opq'.length)), n).toBe(true)
    }
  })

  it('writes the same image as an oci-archive and a docker-archive', async () => {
    const { config, manifest } = await readLayout(img.layout)
    const files = new Map<string, string>()
    for await (const e of readTarStream(createReadStream(img.archive))) {
      const parts: Uint8Array[] = []
      for await (const p of e.data()) parts.push(p)
      if (e.header.type === 'reg') files.set(e.header.name, sha256(Buffer.concat(parts)))
    }
    expect(files.get('index.json')).toBe(await fileDigest(join(img.layout, 'index.json')))
    for (const d of [manifest.config, ...manifest.layers]) expect(files.get(`blobs/sha256/${d.digest.slice(7)}`)).toBe(d.digest)

    const docker = new Map<string, Buffer>()
    const layerDigests = new Map<string, string>()
    for await (const e of readTarStream(createReadStream(img.dockerArchive))) {
      if (e.header.name.endsWith('/layer.tar')) {
        const h = createHash('sha256')
        for await (const p of e.data()) h.update(p)
        layerDigests.set(e.header.name, 'sha256:' + h.digest('hex'))
      } else if (e.header.type === 'reg') {
        const parts: Uint8Array[] = []
        for await (const p of e.data()) parts.push(p)
        docker.set(e.header.name, Buffer.concat(parts))
      }
    }
    const dm = JSON.parse(docker.get('manifest.json')?.toString() ?? 'null') as Array<{ Config: string, RepoTags: string[], Layers: string[] }>
    expect(dm).toHaveLength(1)
    expect(dm[0].RepoTags).toEqual(['debian-python:latest'])
    expect(JSON.parse(docker.get(dm[0].Config)?.toString() ?? 'null')).toEqual(config)
    expect(dm[0].Layers.map(l => layerDigests.get(l))).toEqual(config.rootfs.diff_ids)
  })

  it('has a rebuilt twin with the same file contents but other tar headers', async () => {
    const { manifest } = await readLayout(img.rebuiltLayout)
    const twin = await Promise.all(manifest.layers.map(async l => await entries(blobPath(img.rebuiltLayout, l.digest))))
    expect(twin).toHaveLength(2)
    const strip = (l: Entry[]): Array<Omit<Entry, 'mtime'>> => l.map(({ mtime: _, ...rest }) => rest)
    for (let i = 0; i < 2; i++) {
      expect(strip(twin[i])).toEqual(strip(layers[i]))
      const mtimes = new Set(twin[i].map(e => e.mtime))
      expect(mtimes.size).toBe(1)
      expect(layers[i].every(e => e.mtime !== twin[i][0].mtime)).toBe(true)
    }
    const { manifest: original } = await readLayout(img.layout)
    expect(manifest.layers.map(l => l.digest)).not.toEqual(original.layers.map(l => l.digest))
  })
})

describe.skipIf(needs(debianImageNeeds))('scripts/fixtures/debootstrap-image.sh failures', () => {
  it('says which mirror is unreachable and leaves nothing behind', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'debootstrap-image-test-'))
    try {
      const res = await new Promise<{ code: number | null, stdout: string, stderr: string }>(resolve => {
        const env = { ...process.env, DEBIAN_MIRROR: 'http://127.0.0.1:9/debian' }
        const child = execFile('bash', [fixtureScript, dir], { env }, (_err, stdout, stderr) => { resolve({ code: child.exitCode, stdout, stderr }) })
      })
      expect(res.code).toBe(1)
      expect(res.stdout).toBe('')
      expect(res.stderr).toContain('debootstrap failed (is http://127.0.0.1:9/debian reachable?)')
      expect((await readdir(dir)).filter(f => !f.endsWith('.lock'))).toEqual([])
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
