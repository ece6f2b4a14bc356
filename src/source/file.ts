import { open, type FileHandle } from 'node:fs/promises'
import { NotAFileError } from './errors.js'
import type { RangeSource } from './types.js'

/** A local file as a {@link RangeSource}. */
export class FileSource implements RangeSource {
  private constructor (private readonly fh: FileHandle, private readonly bytes: number) {}

  static async open (path: string): Promise<FileSource> {
    const fh = await open(path, 'r')
    try {
      const st = await fh.stat()
      if (!st.isFile()) throw new NotAFileError(path)
      return new FileSource(fh, st.size)
    } catch (err) {
      await fh.close()
      throw err
    }
  }

  async size (): Promise<number> {
    return this.bytes
  }

  async read (offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    signal?.throwIfAborted()
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new RangeError(`invalid range ${offset}+${length}`)
    }
    const n = Math.max(0, Math.min(length, this.bytes - offset))
    const buf = Buffer.allocUnsafe(n)
    let got = 0
    while (got < n) {
      const { bytesRead } = await this.fh.read(buf, got, n - got, offset + got)
      if (bytesRead === 0) break
      got += bytesRead
    }
    signal?.throwIfAborted()
    return got === n ? buf : buf.subarray(0, got)
  }

  async close (): Promise<void> {
    await this.fh.close()
  }
}
