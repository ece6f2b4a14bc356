/**
 * Random access to the members of an (uncompressed) tar file: the archive is indexed once, then
 * members are read by offset, so an oci-archive or docker-archive is never extracted to disk.
 */
import { MalformedTarError, indexTarFile, TarFileReader, type IndexedTarEntry } from '../estargz/index.js'
import { ClosedError, MalformedLayoutError } from './errors.js'
import { cleanLayoutPath, type LayoutFiles } from './layout-files.js'

/** Symlink hops followed before giving up (docker save links legacy layer.tar files to blobs). */
const MAX_LINK_HOPS = 8

export class TarArchive implements LayoutFiles {
  private closed = false
  private constructor (readonly where: string, private readonly entries: Map<string, IndexedTarEntry>, private readonly reader: TarFileReader) {}

  static async open (path: string): Promise<TarArchive> {
    let list: IndexedTarEntry[]
    try {
      list = await indexTarFile(path)
    } catch (err) {
      if (err instanceof MalformedTarError) throw new MalformedLayoutError(`${path} is not a valid tar archive: ${(err as Error).message}`)
      throw err
    }
    const entries = new Map<string, IndexedTarEntry>()
    for (const e of list) {
      let name: string
      try { name = cleanLayoutPath(e.header.name, path) } catch { continue } // `./` itself, or unsafe names we never look up
      entries.set(name, e) // a later member of the same name wins, as with tar -x
    }
    return new TarArchive(path, entries, await TarFileReader.open(path))
  }

  /** Member names (cleaned), for diagnostics. */
  names (): string[] {
    return [...this.entries.keys()]
  }

  private lookup (path: string): IndexedTarEntry | undefined {
    if (this.closed) throw new ClosedError(`${this.where} is closed`)
    let name = cleanLayoutPath(path, this.where)
    for (let hop = 0; hop <= MAX_LINK_HOPS; hop++) {
      const e = this.entries.get(name)
      if (e == null) return undefined
      if (e.header.type === 'reg') return e
      if (e.header.type === 'hardlink') {
        name = cleanLayoutPath(e.header.linkName, this.where)
      } else if (e.header.type === 'symlink') {
        const target = e.header.linkName
        const dir = name.includes('/') ? name.slice(0, name.lastIndexOf('/')) : ''
        const joined = target.startsWith('/') ? target : (dir === '' ? target : `${dir}/${target}`)
        // resolve `..` inside the archive
        const out: string[] = []
        for (const c of joined.split('/')) {
          if (c === '' || c === '.') continue
          if (c === '..') { if (out.length === 0) return undefined; out.pop() } else out.push(c)
        }
        name = out.join('/')
      } else {
        return undefined
      }
    }
    throw new MalformedLayoutError(`too many links resolving ${JSON.stringify(path)} in ${this.where}`)
  }

  async size (path: string): Promise<number | undefined> {
    return this.lookup(path)?.header.size
  }

  async read (path: string): Promise<Uint8Array | undefined> {
    const e = this.lookup(path)
    if (e == null) return undefined
    const parts: Uint8Array[] = []
    for await (const p of this.reader.data(e)) parts.push(p)
    return parts.length === 1 ? parts[0] : Buffer.concat(parts)
  }

  async * stream (path: string, signal?: AbortSignal): AsyncIterable<Uint8Array> {
    const e = this.lookup(path)
    if (e == null) throw new MalformedLayoutError(`${path} not found in ${this.where}`)
    for await (const p of this.reader.data(e)) {
      signal?.throwIfAborted()
      yield p
    }
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.reader.close()
  }
}
