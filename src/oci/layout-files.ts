/**
 * Read access to the files of an image on disk, whether a directory or a tar archive, so the
 * OCI layout and docker-archive readers are written once for both.
 */
import { createReadStream } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import { join, normalize, sep } from 'node:path'
import { ClosedError, MalformedLayoutError } from './errors.js'

export interface LayoutFiles {
  /** For messages: the directory or archive path. */
  readonly where: string
  /** Size of a regular file, `undefined` when it does not exist. */
  size: (path: string) => Promise<number | undefined>
  /** Whole file, `undefined` when it does not exist. */
  read: (path: string) => Promise<Uint8Array | undefined>
  /** The file's bytes in pieces; the caller checked it exists. */
  stream: (path: string, signal?: AbortSignal) => AsyncIterable<Uint8Array>
  close: () => Promise<void>
}

/** Relative, slash-separated, no `..`: archive member names and layout paths are untrusted. */
export function cleanLayoutPath (path: string, where: string): string {
  const p = path.replace(/^\.\//, '').replace(/^\/+/, '')
  if (p === '' || p.split('/').some(c => c === '..')) throw new MalformedLayoutError(`unsafe path ${JSON.stringify(path)} in ${where}`)
  return p.split('/').filter(c => c !== '' && c !== '.').join('/')
}

/** Node's errno for a path that is not there (so known by its code). */
const isNotFound = (err: unknown): boolean => (err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR'

/** A directory on disk. */
export class DirFiles implements LayoutFiles {
  private closed = false
  constructor (readonly where: string) {}

  private path (p: string): string {
    if (this.closed) throw new ClosedError(`${this.where} is closed`)
    const rel = cleanLayoutPath(p, this.where)
    return join(this.where, normalize(rel).split('/').join(sep))
  }

  async size (p: string): Promise<number | undefined> {
    try {
      const st = await stat(this.path(p))
      return st.isFile() ? st.size : undefined
    } catch (err) {
      if (isNotFound(err)) return undefined
      throw err
    }
  }

  async read (p: string): Promise<Uint8Array | undefined> {
    try {
      return await readFile(this.path(p))
    } catch (err) {
      if (isNotFound(err) || (err as NodeJS.ErrnoException).code === 'EISDIR') return undefined
      throw err
    }
  }

  async * stream (p: string, signal?: AbortSignal): AsyncIterable<Uint8Array> {
    yield * createReadStream(this.path(p), { highWaterMark: 1 << 20, signal })
  }

  async close (): Promise<void> {
    this.closed = true
  }
}
