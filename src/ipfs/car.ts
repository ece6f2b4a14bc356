import { createReadStream, createWriteStream } from 'node:fs'
import { rename, rm } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { basename, dirname, join } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { CarBlockIterator, CarWriter } from '@ipld/car'
import type { CID } from 'multiformats/cid'
import { checkAbort, verifyBlock, type BlockGetter } from './dag-reader.js'
import { isAbortError } from '../errors.js'
import { InvalidCarError, IpfsError } from './errors.js'
import { walkDag } from './walk.js'

/** The blockstore operations a CAR import needs. */
export interface CarBlockstore {
  put: (cid: CID, bytes: Uint8Array) => Promise<unknown>
  has: (cid: CID) => Promise<boolean>
  delete: (cid: CID) => Promise<void>
}

export interface CarStats {
  roots: CID[]
  blocks: number
  bytes: number
}

/**
 * Writes the DAG(s) under `roots` to a CAR v1 file: every block once, depth-first from each
 * root. Written under a temporary name and renamed when complete.
 */
export async function exportCar (getBlock: BlockGetter, roots: CID | CID[], path: string, options: { signal?: AbortSignal } = {}): Promise<CarStats> {
  const list = Array.isArray(roots) ? roots : [roots]
  const tmp = join(dirname(path), `.${basename(path)}.partial-${randomBytes(6).toString('hex')}`)
  const { writer, out } = CarWriter.create(list)
  let blocks = 0
  let bytes = 0
  const writing = pipeline(Readable.from(out), createWriteStream(tmp, { flags: 'wx' }))
  try {
    try {
      const seen = new Set<string>()
      for (const root of list) {
        for await (const b of walkDag(root, getBlock, options)) {
          const key = b.cid.toString()
          if (seen.has(key) || b.bytes == null) continue
          seen.add(key)
          await writer.put({ cid: b.cid, bytes: b.bytes })
          blocks++
          bytes += b.bytes.length
        }
      }
    } finally {
      await writer.close()
    }
    await writing
    await rename(tmp, path)
    return { roots: list, blocks, bytes }
  } catch (err) {
    await writing.catch(() => {})
    await rm(tmp, { force: true })
    throw err
  }
}

/**
 * Imports a CAR file (v1 or v2) into the blockstore, checking every block against its CID.
 * A malformed or truncated CAR, or a block whose bytes do not match, fails with
 * InvalidCarError, and the blocks this import added are removed again: a failed import leaves
 * the repo as it was.
 */
export async function importCar (blockstore: CarBlockstore, input: string | AsyncIterable<Uint8Array>, options: { signal?: AbortSignal } = {}): Promise<CarStats> {
  const what = typeof input === 'string' ? input : 'CAR stream'
  const added: CID[] = []
  let blocks = 0
  let bytes = 0
  try {
    let iterator: CarBlockIterator
    try {
      iterator = await CarBlockIterator.fromIterable(typeof input === 'string' ? createReadStream(input) : input)
    } catch (err) {
      throw new InvalidCarError(`${what}: not a CAR file (${(err as Error).message})`)
    }
    const roots = await iterator.getRoots()
    const it = iterator[Symbol.asyncIterator]()
    while (true) {
      checkAbort(options.signal)
      let next: IteratorResult<{ cid: CID, bytes: Uint8Array }>
      try {
        next = await it.next()
      } catch (err) {
        throw new InvalidCarError(`${what}: malformed or truncated after ${blocks} blocks (${(err as Error).message})`)
      }
      if (next.done === true) break
      const { cid, bytes: data } = next.value
      try {
        verifyBlock(cid, data)
      } catch (err) {
        throw new InvalidCarError(`${what}: block ${blocks}: ${(err as Error).message}`)
      }
      if (!await blockstore.has(cid)) {
        await blockstore.put(cid, data)
        added.push(cid)
      }
      blocks++
      bytes += data.length
    }
    if (roots.length === 0) throw new InvalidCarError(`${what}: the CAR names no root`)
    return { roots, blocks, bytes }
  } catch (err) {
    for (const cid of added) await blockstore.delete(cid).catch(() => {})
    if (err instanceof IpfsError || isAbortError(err)) throw err
    throw new InvalidCarError(`${what}: ${(err as Error).message}`)
  }
}
