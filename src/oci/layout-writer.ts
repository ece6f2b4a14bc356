/**
 * Writes an image as an OCI image layout directory. Blobs are written to a temp file, verified
 * and renamed into place, so a blob path never holds partial bytes; `index.json` is replaced
 * atomically by `commit()`; `abort()` removes the blobs this writer added.
 */
import { randomBytes } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { Readable } from 'node:stream'
import { parseDigest, verifyStream } from './digest.js'
import { ClosedError, MalformedLayoutError } from './errors.js'
import { MediaType } from './media-types.js'
import { REF_NAME_ANNOTATION, type Descriptor, type Index } from './types.js'
import { parseIndex } from './validate.js'

export const DEFAULTS = {
  /** Indentation of index.json (0 = compact, like containerd and skopeo). */
  indexIndent: 0
} as const

async function * once (bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes
}

async function exists (path: string): Promise<boolean> {
  return await stat(path).then(() => true, () => false)
}

async function writeAtomic (path: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`
  try {
    await writeFile(tmp, data)
    await rename(tmp, path)
  } catch (err) {
    await rm(tmp, { force: true })
    throw err
  }
}

export class OciLayoutWriter {
  private readonly entries: Descriptor[]
  private readonly written: string[] = []
  private readonly temps = new Set<string>()
  private closed = false

  private constructor (readonly dir: string, existing: Index | undefined) {
    this.entries = existing?.manifests.slice() ?? []
  }

  /** Opens (or creates) a layout directory; an existing index.json is kept and extended. */
  static async open (dir: string): Promise<OciLayoutWriter> {
    await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true })
    let existing: Index | undefined
    const indexPath = join(dir, 'index.json')
    if (await exists(indexPath)) existing = parseIndex(await readFile(indexPath), `index.json of oci:${dir}`)
    const layoutPath = join(dir, 'oci-layout')
    if (await exists(layoutPath)) {
      const v = (JSON.parse(await readFile(layoutPath, 'utf8').catch(() => '{}')) as { imageLayoutVersion?: unknown }).imageLayoutVersion
      if (typeof v !== 'string' || !v.startsWith('1.')) throw new MalformedLayoutError(`oci:${dir}: existing oci-layout has unsupported imageLayoutVersion ${JSON.stringify(v)}`)
    }
    return new OciLayoutWriter(dir, existing)
  }

  blobPath (digest: string): string {
    const { algorithm, hex } = parseDigest(digest)
    return join(this.dir, 'blobs', algorithm, hex)
  }

  async hasBlob (digest: string): Promise<boolean> {
    return await exists(this.blobPath(digest))
  }

  /**
   * Writes a blob, verified against `desc` while it is written. A mismatch or an abort leaves
   * nothing behind. Blobs already present are not rewritten (they are content-addressed).
   */
  async writeBlob (desc: Descriptor, data: Uint8Array | AsyncIterable<Uint8Array>, signal?: AbortSignal): Promise<void> {
    if (this.closed) throw new ClosedError(`oci:${this.dir} writer is closed`)
    const path = this.blobPath(desc.digest)
    const src = data instanceof Uint8Array ? once(data) : data
    if (await exists(path)) {
      // Drain a stream we were handed, so a producer waiting on it does not hang.
      if (!(data instanceof Uint8Array)) for await (const _ of src) { signal?.throwIfAborted() }
      return
    }
    await mkdir(join(this.dir, 'blobs', parseDigest(desc.digest).algorithm), { recursive: true })
    const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`
    this.temps.add(tmp)
    try {
      await pipeline(Readable.from(verifyStream(src, desc, `oci:${this.dir}`)), createWriteStream(tmp), { signal })
      await rename(tmp, path)
      this.written.push(path)
    } finally {
      this.temps.delete(tmp)
      await rm(tmp, { force: true })
    }
  }

  /**
   * Lists `desc` (an index or manifest already written as a blob) in index.json, tagged with
   * `tag` (replacing an entry with the same tag). Takes effect on `commit()`.
   */
  addImage (desc: Descriptor, tag?: string): void {
    const entry: Descriptor = { ...desc }
    if (tag != null) {
      entry.annotations = { ...desc.annotations, [REF_NAME_ANNOTATION]: tag }
      const i = this.entries.findIndex(e => e.annotations?.[REF_NAME_ANNOTATION] === tag)
      if (i >= 0) this.entries.splice(i, 1)
    } else if (this.entries.some(e => e.digest === desc.digest && e.annotations?.[REF_NAME_ANNOTATION] == null)) {
      return
    }
    this.entries.push(entry)
  }

  /** The index.json this writer will commit. */
  index (): Index {
    return { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: this.entries }
  }

  /** Writes `oci-layout` and `index.json` (atomically). */
  async commit (): Promise<void> {
    if (this.closed) throw new ClosedError(`oci:${this.dir} writer is closed`)
    for (const e of this.entries) {
      if (!(await this.hasBlob(e.digest))) throw new MalformedLayoutError(`oci:${this.dir}: index.json would reference blob ${e.digest}, which was not written`)
    }
    await writeAtomic(join(this.dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }))
    await writeAtomic(join(this.dir, 'index.json'), JSON.stringify(this.index(), null, DEFAULTS.indexIndent || undefined))
    this.closed = true
  }

  /** Removes the blobs this writer added and any temp file; index.json is left as it was. */
  async abort (): Promise<void> {
    this.closed = true
    await Promise.all([...this.temps, ...this.written].map(async p => { await rm(p, { force: true }) }))
    this.written.length = 0
  }
}
