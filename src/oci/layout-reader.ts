/**
 * `oci:DIR[:TAG]` and `oci-archive:FILE[:TAG]`: an OCI image layout (oci-layout, index.json,
 * blobs/<alg>/<hex>) in a directory or in a tar archive read in place.
 */
import { stat } from 'node:fs/promises'
import { digestOf, parseDigest } from './digest.js'
import { ImageNotFoundError, MalformedIndexError, MalformedLayoutError } from './errors.js'
import { FilesReader } from './files-reader.js'
import { DirFiles, type LayoutFiles } from './layout-files.js'
import { MediaType } from './media-types.js'
import { TarArchive } from './tar-archive.js'
import { REF_NAME_ANNOTATION, type Descriptor, type Index } from './types.js'
import { parseIndex } from './validate.js'

const utf8 = new TextDecoder()

export class OciLayoutReader extends FilesReader {
  private rootDesc?: Descriptor

  private constructor (name: string, files: LayoutFiles, private readonly index: Index, private readonly indexBytes: Uint8Array, private readonly tag?: string) {
    super(name, files)
  }

  /** Opens the layout held by `files`: checks oci-layout and parses index.json. */
  static async fromFiles (name: string, files: LayoutFiles, tag?: string): Promise<OciLayoutReader> {
    try {
      const layout = await files.read('oci-layout')
      if (layout == null) throw new MalformedLayoutError(`${name}: oci-layout file is missing (not an OCI image layout)`)
      let version: unknown
      try { version = (JSON.parse(utf8.decode(layout)) as { imageLayoutVersion?: unknown }).imageLayoutVersion } catch {}
      if (typeof version !== 'string') throw new MalformedLayoutError(`${name}: oci-layout is not {"imageLayoutVersion": "1.0.0"}`)
      if (!version.startsWith('1.')) throw new MalformedLayoutError(`${name}: unsupported imageLayoutVersion ${JSON.stringify(version)}`)
      const bytes = await files.read('index.json')
      if (bytes == null) throw new MalformedIndexError(`${name}: index.json is missing`)
      const index = parseIndex(bytes, `index.json of ${name}`)
      return new OciLayoutReader(name, files, index, bytes, tag)
    } catch (err) {
      await files.close()
      throw err
    }
  }

  /** The layout's index.json. */
  layoutIndex (): Index {
    return this.index
  }

  /** Tags listed in index.json. */
  tags (): string[] {
    return this.index.manifests.map(m => m.annotations?.[REF_NAME_ANNOTATION]).filter((t): t is string => t != null)
  }

  async root (): Promise<Descriptor> {
    if (this.rootDesc != null) return this.rootDesc
    const entries = this.index.manifests
    const tags = this.tags()
    if (this.tag != null) {
      const hit = entries.find(m => m.annotations?.[REF_NAME_ANNOTATION] === this.tag)
      if (hit == null) throw new ImageNotFoundError(`tag ${JSON.stringify(this.tag)} not found in ${this.name} (tags: ${tags.length > 0 ? tags.join(', ') : 'none'})`)
      this.rootDesc = hit
    } else if (entries.length === 1) {
      this.rootDesc = entries[0]
    } else if (entries.length === 0) {
      throw new ImageNotFoundError(`${this.name}: index.json lists no images`)
    } else if (tags.length > 0) {
      throw new ImageNotFoundError(`${this.name} holds ${entries.length} images; choose one with :TAG (tags: ${tags.join(', ')})`)
    } else {
      // Untagged entries only (a multi-platform image written straight into index.json): the
      // index.json itself is the image index.
      const digest = digestOf(this.indexBytes)
      this.memory.set(digest, this.indexBytes)
      this.rootDesc = { mediaType: this.index.mediaType ?? MediaType.OciIndex, digest, size: this.indexBytes.length }
    }
    return this.rootDesc
  }

  protected blobPath (digest: string): string {
    const { algorithm, hex } = parseDigest(digest)
    return `blobs/${algorithm}/${hex}`
  }
}

/** Opens `oci:DIR[:TAG]`. */
export async function openOciLayout (dir: string, tag?: string): Promise<OciLayoutReader> {
  const st = await stat(dir).catch(() => undefined)
  if (st == null || !st.isDirectory()) throw new MalformedLayoutError(`oci:${dir}: not a directory`)
  return await OciLayoutReader.fromFiles(`oci:${dir}${tag != null ? `:${tag}` : ''}`, new DirFiles(dir), tag)
}

/** Opens `oci-archive:FILE[:TAG]` without extracting it. */
export async function openOciArchive (file: string, tag?: string): Promise<OciLayoutReader> {
  const st = await stat(file).catch(() => undefined)
  if (st == null || !st.isFile()) throw new MalformedLayoutError(`oci-archive:${file}: not a file`)
  return await OciLayoutReader.fromFiles(`oci-archive:${file}${tag != null ? `:${tag}` : ''}`, await TarArchive.open(file), tag)
}
