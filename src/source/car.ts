import { createReadStream } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { CarIndexer } from '@ipld/car'
import { CID } from 'multiformats/cid'
import { BlockNotFoundError, InvalidCarError, checkAbort, UnixfsFileReader, verifyBlock } from '../ipfs/index.js'
import type { RangeSource } from './types.js'

export interface CarSourceOptions {
  /** The UnixFS file to read; default: the CAR's first root. */
  root?: CID | string
  /** Check each block against its CID when read. Default true (the CAR may be untrusted). */
  verify?: boolean
}

interface Location { offset: number, length: number }

/**
 * A UnixFS file inside a CAR file (v1 or v2) as a {@link RangeSource}. Opening scans the CAR
 * once to index where each block sits (offsets only, not bytes); reads then fetch just the
 * blocks a range covers with positioned reads.
 */
export class CarSource implements RangeSource {
  private closed = false

  private constructor (
    private readonly fh: FileHandle,
    readonly root: CID,
    private readonly reader: UnixfsFileReader
  ) {}

  static async open (path: string, options: CarSourceOptions = {}): Promise<CarSource> {
    const index = new Map<string, Location>()
    let roots: CID[]
    try {
      const indexer = await CarIndexer.fromIterable(createReadStream(path))
      roots = await indexer.getRoots()
      for await (const b of indexer) index.set(b.cid.toString(), { offset: b.blockOffset, length: b.blockLength })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw err // Node's errno: no such file, not a bad CAR
      throw new InvalidCarError(`${path}: not a valid CAR file (${(err as Error).message})`)
    }
    const root = options.root != null ? (typeof options.root === 'string' ? CID.parse(options.root) : options.root) : roots[0]
    if (root == null) throw new InvalidCarError(`${path}: the CAR names no root`)
    const verify = options.verify ?? true
    const fh = await open(path, 'r')
    try {
      const getBlock = async (cid: CID, signal?: AbortSignal): Promise<Uint8Array> => {
        checkAbort(signal)
        const at = index.get(cid.toString())
        if (at == null) throw new BlockNotFoundError(cid.toString(), path)
        const buf = Buffer.allocUnsafe(at.length)
        let got = 0
        while (got < at.length) {
          const { bytesRead } = await fh.read(buf, got, at.length - got, at.offset + got)
          if (bytesRead === 0) throw new InvalidCarError(`${path}: truncated inside block ${cid.toString()}`)
          got += bytesRead
        }
        if (verify) verifyBlock(cid, buf)
        checkAbort(signal)
        return buf
      }
      return new CarSource(fh, root, await UnixfsFileReader.open(root, getBlock))
    } catch (err) {
      await fh.close()
      throw err
    }
  }

  async size (): Promise<number> {
    return this.reader.size
  }

  async read (offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    if (this.closed) throw new Error('CarSource is closed')
    return await this.reader.read(offset, length, signal)
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.fh.close()
  }
}
