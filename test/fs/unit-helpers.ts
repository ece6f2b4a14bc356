import { buildEstargz } from '../../src/estargz/index.js'
import { makeTar, type FixtureEntry } from '../../scripts/fixtures/tar.js'
import type { RangeSource } from '../../src/source/types.js'

/** A blob in memory as a RangeSource. */
export class MemorySource implements RangeSource {
  constructor (readonly blob: Buffer) {}
  async size (): Promise<number> { return this.blob.length }
  async read (offset: number, length: number): Promise<Uint8Array> { return this.blob.subarray(offset, offset + length) }
}

export async function buildBlob (entries: FixtureEntry[], options: { chunkSize?: number, prioritizedFiles?: string[] } = {}): Promise<{ blob: Buffer, tocDigest: string }> {
  const segs: Uint8Array[] = []
  const r = await buildEstargz((async function * () { yield makeTar(entries) })(), async (s) => { segs.push(s.bytes) }, options)
  return { blob: Buffer.concat(segs), tocDigest: r.tocDigest }
}
