/**
 * `docker-archive:FILE[:REPO:TAG|:@N]`: what `docker save` writes (manifest.json with Config,
 * RepoTags and Layers), presented as a Docker v2 schema 2 image. Layer digests and sizes are
 * computed once when the archive is opened (one read of each layer member).
 */
import { stat } from 'node:fs/promises'
import { Digester, digestOf } from './digest.js'
import { DigestMismatchError, ImageNotFoundError, MalformedLayoutError } from './errors.js'
import { FilesReader } from './files-reader.js'
import type { LayoutFiles } from './layout-files.js'
import { MediaType } from './media-types.js'
import { TarArchive } from './tar-archive.js'
import type { Descriptor, Manifest } from './types.js'
import { checkDescriptor, configPlatform, parseConfig } from './validate.js'

/** One entry of a docker-archive's manifest.json. */
interface ArchiveEntry {
  Config: string
  RepoTags?: string[] | null
  Layers: string[]
  LayerSources?: Record<string, Descriptor>
}

const utf8 = new TextDecoder()

function parseArchiveManifest (bytes: Uint8Array, where: string): ArchiveEntry[] {
  let v: unknown
  try { v = JSON.parse(utf8.decode(bytes)) } catch (err) {
    throw new MalformedLayoutError(`${where}: manifest.json is not valid JSON: ${(err as Error).message}`)
  }
  if (!Array.isArray(v) || v.length === 0) throw new MalformedLayoutError(`${where}: manifest.json must be a non-empty array`)
  v.forEach((e: unknown, i) => {
    const o = e as Partial<ArchiveEntry> | null
    if (typeof o !== 'object' || o === null || typeof o.Config !== 'string' || !Array.isArray(o.Layers) || o.Layers.some(l => typeof l !== 'string') ||
      (o.RepoTags != null && (!Array.isArray(o.RepoTags) || o.RepoTags.some(t => typeof t !== 'string')))) {
      throw new MalformedLayoutError(`${where}: manifest.json[${i}] needs string Config, string[] Layers and optional string[] RepoTags`)
    }
    for (const [k, d] of Object.entries(o.LayerSources ?? {})) checkDescriptor(d, `LayerSources[${k}]`, 'manifest.json', where, MalformedLayoutError)
  })
  return v as ArchiveEntry[]
}

/** gzip and zstd magic; anything else is taken as a plain tar (the Docker default). */
function layerMediaType (head: Uint8Array): string {
  if (head[0] === 0x1f && head[1] === 0x8b) return MediaType.DockerLayerGzip
  if (head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return MediaType.OciLayerZstd
  return MediaType.DockerLayer
}

export class DockerArchiveReader extends FilesReader {
  private readonly paths = new Map<string, string>()
  private rootDesc!: Descriptor

  private constructor (name: string, files: LayoutFiles) {
    super(name, files)
  }

  static async open (file: string, select: { tag?: string, index?: number } = {}): Promise<DockerArchiveReader> {
    const st = await stat(file).catch(() => undefined)
    const name = `docker-archive:${file}${select.tag != null ? `:${select.tag}` : select.index != null ? `:@${select.index}` : ''}`
    if (st == null || !st.isFile()) throw new MalformedLayoutError(`${name}: not a file`)
    const files = await TarArchive.open(file)
    const src = new DockerArchiveReader(name, files)
    try {
      await src.load(select)
      return src
    } catch (err) {
      await files.close()
      throw err
    }
  }

  private async load (select: { tag?: string, index?: number }): Promise<void> {
    const mbytes = await this.files.read('manifest.json')
    if (mbytes == null) throw new MalformedLayoutError(`${this.name}: manifest.json is missing (not a docker save archive)`)
    const entries = parseArchiveManifest(mbytes, this.name)
    let entry: ArchiveEntry | undefined
    const tags = entries.flatMap(e => e.RepoTags ?? [])
    if (select.index != null) {
      entry = entries[select.index]
      if (entry == null) throw new ImageNotFoundError(`${this.name}: no image @${select.index} (the archive holds ${entries.length})`)
    } else if (select.tag != null) {
      const want = select.tag.includes(':') ? select.tag : `${select.tag}:latest`
      entry = entries.find(e => (e.RepoTags ?? []).some(t => t === want || t === `docker.io/${want}` || t === `docker.io/library/${want}`))
      if (entry == null) throw new ImageNotFoundError(`${this.name}: tag ${JSON.stringify(select.tag)} not found (tags: ${tags.length > 0 ? tags.join(', ') : 'none'})`)
    } else if (entries.length > 1) {
      throw new ImageNotFoundError(`${this.name} holds ${entries.length} images; choose one with :REPO:TAG or :@N (tags: ${tags.join(', ')})`)
    } else {
      entry = entries[0]
    }

    const configBytes = await this.files.read(entry.Config)
    if (configBytes == null) throw new MalformedLayoutError(`${this.name}: config ${entry.Config} named in manifest.json is missing`)
    const configDigest = digestOf(configBytes)
    this.paths.set(configDigest, entry.Config)
    const config = parseConfig(configBytes, `${configDigest} (${entry.Config})`)
    const diffIds = config.rootfs.diff_ids
    if (diffIds.length !== entry.Layers.length) {
      throw new MalformedLayoutError(`${this.name}: config ${configDigest} lists ${diffIds.length} diff_ids but manifest.json lists ${entry.Layers.length} layers`)
    }

    const layers: Descriptor[] = []
    for (const [i, path] of entry.Layers.entries()) {
      const foreign = entry.LayerSources?.[diffIds[i]]
      if (foreign != null) { // foreign layers are referenced, not included
        layers.push(foreign)
        continue
      }
      const size = await this.files.size(path)
      if (size == null) throw new MalformedLayoutError(`${this.name}: layer ${path} named in manifest.json is missing`)
      const d = new Digester()
      let head: Uint8Array | undefined
      for await (const piece of this.files.stream(path)) {
        head ??= piece.subarray(0, 4)
        d.update(piece)
      }
      const digest = d.digest()
      const mediaType = layerMediaType(head ?? new Uint8Array())
      // An uncompressed layer is its own DiffID: a cheap integrity check of the archive.
      if (mediaType === MediaType.DockerLayer && digest !== diffIds[i]) throw new DigestMismatchError(diffIds[i], diffIds[i], digest, `${this.name} (layer ${path})`)
      this.paths.set(digest, path)
      layers.push({ mediaType, digest, size })
    }

    const manifest: Manifest = {
      schemaVersion: 2,
      mediaType: MediaType.DockerManifest,
      config: { mediaType: MediaType.DockerConfig, digest: configDigest, size: configBytes.length },
      layers
    }
    const bytes = Buffer.from(JSON.stringify(manifest))
    const digest = digestOf(bytes)
    this.memory.set(digest, bytes)
    this.rootDesc = { mediaType: MediaType.DockerManifest, digest, size: bytes.length, platform: configPlatform(config) }
  }

  async root (): Promise<Descriptor> {
    return this.rootDesc
  }

  protected blobPath (digest: string): string | undefined {
    return this.paths.get(digest)
  }
}

/** Opens `docker-archive:FILE`. */
export async function openDockerArchive (file: string, select?: { tag?: string, index?: number }): Promise<DockerArchiveReader> {
  return await DockerArchiveReader.open(file, select)
}
