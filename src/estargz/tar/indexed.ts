import { createReadStream } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { MalformedTarError } from '../errors.js'
import type { TarHeader } from './header.js'
import { readTarStream } from './stream.js'

/** Where an entry sits in a plain tar file, so it can be emitted in any order. */
export interface IndexedTarEntry {
  header: TarHeader
  /** Offset and length of the entry's header blocks (extension headers included). */
  rawOffset: number
  rawLength: number
  /** Offset of the payload. */
  dataOffset: number
}

/** Lists the entries of a plain (uncompressed) tar file in one pass. */
export async function indexTarFile (path: string): Promise<IndexedTarEntry[]> {
  const out: IndexedTarEntry[] = []
  for await (const e of readTarStream(createReadStream(path, { highWaterMark: 1 << 20 }))) {
    out.push({ header: e.header, rawOffset: e.offset, rawLength: e.raw.length, dataOffset: e.offset + e.raw.length })
  }
  return out
}

/** Random access to the bytes of an indexed tar file. */
export class TarFileReader {
  private constructor (private readonly fh: FileHandle) {}

  static async open (path: string): Promise<TarFileReader> {
    return new TarFileReader(await open(path, 'r'))
  }

  async raw (e: IndexedTarEntry): Promise<Uint8Array> {
    return await this.readExactly(e.rawOffset, e.rawLength)
  }

  async * data (e: IndexedTarEntry, maxPiece = 1 << 20): AsyncGenerator<Uint8Array> {
    let pos = e.dataOffset
    const end = e.dataOffset + e.header.size
    while (pos < end) {
      const n = Math.min(maxPiece, end - pos)
      yield await this.readExactly(pos, n)
      pos += n
    }
  }

  async close (): Promise<void> {
    await this.fh.close()
  }

  private async readExactly (position: number, length: number): Promise<Uint8Array> {
    const buf = Buffer.allocUnsafe(length)
    let got = 0
    while (got < length) {
      const { bytesRead } = await this.fh.read(buf, got, length - got, position + got)
      if (bytesRead === 0) throw new MalformedTarError(`tar file truncated at offset ${position + got}`)
      got += bytesRead
    }
    return buf
  }
}
