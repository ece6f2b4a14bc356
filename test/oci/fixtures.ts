/**
 * Small synthetic images for the oci tests: tar layers made in Node, configs and manifests as
 * JSON, written as OCI layout dirs, oci-archives and docker-archives.
 */
import { createHash } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { MediaType } from '../../src/oci/media-types.js'
import type { Descriptor, ImageConfig, Index, Manifest, Platform } from '../../src/oci/types.js'

export const sha256 = (b: Uint8Array): string => 'sha256:' + createHash('sha256').update(b).digest('hex')

export interface TarFile {
  name: string
  data?: Uint8Array | string
  type?: 'file' | 'dir' | 'symlink'
  linkName?: string
}

function putStr (b: Uint8Array, off: number, len: number, s: string): void {
  const enc = Buffer.from(s, 'utf8')
  if (enc.length > len) throw new Error(`tar field too long: ${s}`)
  b.set(enc, off)
}
function putOct (b: Uint8Array, off: number, len: number, n: number): void {
  putStr(b, off, len - 1, n.toString(8).padStart(len - 1, '0'))
}

/** A minimal ustar archive (names ≤ 100 bytes) with the EOF marker. */
export function makeTar (files: TarFile[]): Uint8Array {
  const parts: Uint8Array[] = []
  for (const f of files) {
    const data = typeof f.data === 'string' ? Buffer.from(f.data) : f.data ?? new Uint8Array()
    const h = new Uint8Array(512)
    const type = f.type ?? 'file'
    putStr(h, 0, 100, f.name)
    putOct(h, 100, 8, type === 'dir' ? 0o755 : 0o644)
    putOct(h, 108, 8, 0)
    putOct(h, 116, 8, 0)
    putOct(h, 124, 12, type === 'file' ? data.length : 0)
    putOct(h, 136, 12, 1_700_000_000)
    h[156] = type === 'dir' ? 0x35 : type === 'symlink' ? 0x32 : 0x30
    if (f.linkName != null) putStr(h, 157, 100, f.linkName)
    putStr(h, 257, 6, 'ustar')
    putStr(h, 263, 2, '00')
    h.fill(0x20, 148, 156)
    let sum = 0
    for (const x of h) sum += x
    putStr(h, 148, 7, sum.toString(8).padStart(6, '0'))
    parts.push(h)
    if (type === 'file' && data.length > 0) {
      parts.push(data)
      const pad = (512 - (data.length % 512)) % 512
      if (pad > 0) parts.push(new Uint8Array(pad))
    }
  }
  parts.push(new Uint8Array(1024))
  return Buffer.concat(parts)
}

export interface Blob {
  descriptor: Descriptor
  bytes: Uint8Array
}

export interface TestImage {
  platform: Platform
  layers: Array<Blob & { diffId: string, tar: Uint8Array }>
  config: Blob & { json: ImageConfig }
  manifest: Blob & { json: Manifest }
}

export function blob (mediaType: string, bytes: Uint8Array, extra: Partial<Descriptor> = {}): Blob {
  return { descriptor: { mediaType, digest: sha256(bytes), size: bytes.length, ...extra }, bytes }
}

export function jsonBlob (mediaType: string, value: unknown, extra: Partial<Descriptor> = {}): Blob {
  return blob(mediaType, Buffer.from(JSON.stringify(value)), extra)
}

/** A single-platform image with `layerCount` small layers (gzip, or plain tar for `docker`). */
export function makeImage (opts: { platform?: Platform, layerCount?: number, docker?: boolean, seed?: string, layerSize?: number } = {}): TestImage {
  const platform = opts.platform ?? { os: 'linux', architecture: 'amd64' }
  const seed = opts.seed ?? 'x'
  const layers = Array.from({ length: opts.layerCount ?? 2 }, (_, i) => {
    const tar = makeTar([
      { name: `dir${i}/`, type: 'dir' },
      { name: `dir${i}/file.txt`, data: `layer ${i} of ${platform.architecture} ${seed}\n`.repeat(1 + i) },
      { name: `dir${i}/big.bin`, data: Buffer.alloc(opts.layerSize ?? 3000, i + 1) },
      { name: `dir${i}/link`, type: 'symlink', linkName: 'file.txt' }
    ])
    const bytes = opts.docker === true ? tar : gzipSync(tar)
    const mt = opts.docker === true ? MediaType.DockerLayer : MediaType.OciLayerGzip
    return { ...blob(mt, bytes), diffId: sha256(tar), tar }
  })
  const json: ImageConfig = {
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant != null ? { variant: platform.variant } : {}),
    created: '2026-01-01T00:00:00Z',
    config: { Env: ['PATH=/usr/bin'], Cmd: ['/bin/sh'], Labels: { seed } },
    rootfs: { type: 'layers', diff_ids: layers.map(l => l.diffId) },
    history: layers.map((_, i) => ({ created_by: `layer ${i}` }))
  }
  const config = { ...jsonBlob(opts.docker === true ? MediaType.DockerConfig : MediaType.OciConfig, json), json }
  const mjson: Manifest = {
    schemaVersion: 2,
    mediaType: opts.docker === true ? MediaType.DockerManifest : MediaType.OciManifest,
    config: config.descriptor,
    layers: layers.map(l => l.descriptor)
  }
  const manifest = { ...jsonBlob(mjson.mediaType as string, mjson, { platform }), json: mjson }
  return { platform, layers, config, manifest }
}

export interface TestIndex {
  images: TestImage[]
  index: Blob & { json: Index }
}

/** A 2-platform (linux/amd64 + linux/arm64) image index. */
export function makeMultiPlatform (opts: { docker?: boolean } = {}): TestIndex {
  const images = [
    makeImage({ platform: { os: 'linux', architecture: 'amd64' }, docker: opts.docker }),
    makeImage({ platform: { os: 'linux', architecture: 'arm64', variant: 'v8' }, docker: opts.docker, layerCount: 3 })
  ]
  const json: Index = {
    schemaVersion: 2,
    mediaType: opts.docker === true ? MediaType.DockerManifestList : MediaType.OciIndex,
    manifests: images.map(i => i.manifest.descriptor)
  }
  return { images, index: { ...jsonBlob(json.mediaType as string, json), json } }
}

/** Every blob of an image (layers, config, manifest, and the index if any). */
export function allBlobs (img: TestImage | TestIndex): Blob[] {
  if ('images' in img) return [...img.images.flatMap(allBlobs), img.index]
  return [...img.layers, img.config, img.manifest]
}

/** Writes an OCI layout dir with the given index.json entries. */
export async function writeLayout (dir: string, blobs: Blob[], entries: Descriptor[], opts: { skipLayoutFile?: boolean } = {}): Promise<void> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true })
  for (const b of blobs) await writeFile(join(dir, 'blobs', 'sha256', b.descriptor.digest.slice(7)), b.bytes)
  if (opts.skipLayoutFile !== true) await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}')
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: entries }))
}

/** Tags a descriptor for index.json. */
export function tagged (d: Descriptor, tag: string): Descriptor {
  const { platform: _p, ...rest } = d
  return { ...rest, annotations: { 'org.opencontainers.image.ref.name': tag } }
}

/** Writes a tar file of named members (directories implied). */
export async function writeTarFile (file: string, members: Array<{ name: string, data: Uint8Array | string }>): Promise<void> {
  await mkdir(dirname(file), { recursive: true })
  const dirs = new Set<string>()
  const files: TarFile[] = []
  for (const m of members) {
    const parts = m.name.split('/')
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join('/') + '/'
      if (!dirs.has(d)) { dirs.add(d); files.push({ name: d, type: 'dir' }) }
    }
    files.push({ name: m.name, data: m.data })
  }
  await writeFile(file, makeTar(files))
}

/** An oci-archive: the layout files in a tar. */
export async function writeOciArchive (file: string, blobs: Blob[], entries: Descriptor[]): Promise<void> {
  await writeTarFile(file, [
    { name: 'oci-layout', data: '{"imageLayoutVersion":"1.0.0"}' },
    { name: 'index.json', data: JSON.stringify({ schemaVersion: 2, manifests: entries }) },
    ...blobs.map(b => ({ name: `blobs/sha256/${b.descriptor.digest.slice(7)}`, data: b.bytes }))
  ])
}

/** A docker-archive as `docker save` (pre-25) writes it: <id>/layer.tar, <hex>.json, manifest.json. */
export async function writeDockerArchive (file: string, images: Array<{ image: TestImage, tags: string[] }>): Promise<void> {
  const members: Array<{ name: string, data: Uint8Array | string }> = []
  const manifest = images.map(({ image, tags }) => {
    const layers = image.layers.map((l, i) => {
      const id = createHash('sha256').update(`${l.diffId}${i}`).digest('hex')
      members.push({ name: `${id}/layer.tar`, data: l.bytes }, { name: `${id}/VERSION`, data: '1.0' })
      return `${id}/layer.tar`
    })
    const configName = `${image.config.descriptor.digest.slice(7)}.json`
    members.push({ name: configName, data: image.config.bytes })
    return { Config: configName, RepoTags: tags, Layers: layers }
  })
  members.push({ name: 'manifest.json', data: JSON.stringify(manifest) })
  await writeTarFile(file, members)
}
