import { createHash } from 'node:crypto'
import { CarWriter } from '@ipld/car/writer'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import * as Digest from 'multiformats/hashes/digest'
import { identity } from 'multiformats/hashes/identity'
import { sha256, sha512 } from 'multiformats/hashes/sha2'
import { describe, expect, it } from 'vitest'
import {
  BundleBlockMismatchError, BundleFormatError, BundleLimitError, BundleTruncatedError, BundleUnsupportedHashError, readCar
} from '../../src/bundle/index.js'

async function car (roots: CID[], blocks: Array<{ cid: CID, bytes: Uint8Array }>): Promise<Buffer> {
  const { writer, out } = CarWriter.create(roots)
  const parts: Uint8Array[] = []
  const done = (async () => { for await (const p of out) parts.push(p) })()
  for (const b of blocks) await writer.put(b)
  await writer.close()
  await done
  return Buffer.concat(parts)
}

async function * pieces (bytes: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size)
}

async function readAll (bytes: Uint8Array, size = 1 << 20, limits = {}): Promise<{ roots: string[], blocks: Array<{ cid: string, bytes: Uint8Array, offset: number }> }> {
  const c = await readCar(pieces(bytes, size), { limits })
  const blocks = []
  for await (const b of c.blocks) blocks.push({ cid: b.cid.toString(), bytes: Buffer.from(b.bytes), offset: b.offset })
  return { roots: c.roots.map(String), blocks }
}

const block = async (text: string, hasher: { digest: (b: Uint8Array) => Promise<Digest.Digest<number, number>> | Digest.Digest<number, number> } = sha256): Promise<{ cid: CID, bytes: Uint8Array }> => {
  const bytes = Buffer.from(text)
  return { cid: CID.createV1(raw.code, await hasher.digest(bytes)), bytes }
}

describe('readCar', () => {
  it('reads roots and blocks, each checked, whatever the input\'s chunking (sha2-256, sha2-512, identity)', async () => {
    const a = await block('a'.repeat(1000))
    const b = await block('b', sha512)
    const id = { cid: CID.createV1(raw.code, identity.digest(Buffer.from('inline'))), bytes: Buffer.from('inline') }
    const bytes = await car([a.cid, b.cid], [a, b, id])
    for (const size of [1, 7, 4096]) {
      const r = await readAll(bytes, size)
      expect(r.roots).toEqual([a.cid.toString(), b.cid.toString()])
      expect(r.blocks.map(x => x.cid)).toEqual([a, b, id].map(x => x.cid.toString()))
      expect(r.blocks.map(x => Buffer.from(x.bytes).toString())).toEqual([a, b, id].map(x => Buffer.from(x.bytes).toString()))
      // the offset is where the block's section starts: its length's varint, then the CID
      for (const x of r.blocks) {
        const cid = CID.parse(x.cid).bytes
        const varintLength = cid.length + x.bytes.length < 128 ? 1 : 2
        expect(bytes.indexOf(Buffer.from(cid), x.offset)).toBe(x.offset + varintLength)
      }
    }
  })

  it('refuses a block that does not match its CID, with the section\'s offset', async () => {
    const a = await block('hello')
    const bytes = await car([a.cid], [a])
    const bad = Buffer.from(bytes)
    bad[bad.length - 1] ^= 1
    const err = await readAll(bad).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(BundleBlockMismatchError)
    expect((err as BundleBlockMismatchError).offset).toBe((await readAll(bytes)).blocks[0].offset)
  })

  it('refuses hashes it cannot check, and truncated digests', async () => {
    const bytes = Buffer.from('x')
    const blake = CID.createV1(raw.code, Digest.create(0xb220, createHash('sha256').update(bytes).digest()))
    await expect(readAll(await car([blake], [{ cid: blake, bytes }]))).rejects.toBeInstanceOf(BundleUnsupportedHashError)
    const short = CID.createV1(raw.code, Digest.create(sha256.code, createHash('sha256').update(bytes).digest().subarray(0, 20)))
    await expect(readAll(await car([short], [{ cid: short, bytes }]))).rejects.toBeInstanceOf(BundleUnsupportedHashError)
  })

  it('refuses what is not a CARv1: empty, CARv2, not CBOR, an empty section, an endless varint', async () => {
    await expect(readAll(Buffer.alloc(0))).rejects.toBeInstanceOf(BundleFormatError)
    // a CARv2 pragma: { version: 2 } in CBOR, length-prefixed
    await expect(readAll(Buffer.from('0aa16776657273696f6e02', 'hex'))).rejects.toBeInstanceOf(BundleFormatError)
    await expect(readAll(Buffer.concat([Buffer.from([5]), Buffer.from('hello')]))).rejects.toBeInstanceOf(BundleFormatError)
    const a = await block('a')
    const header = (await car([a.cid], [])).subarray()
    await expect(readAll(Buffer.concat([header, Buffer.from([0])]))).rejects.toBeInstanceOf(BundleFormatError)
    await expect(readAll(Buffer.concat([header, Buffer.alloc(9, 0x80)]))).rejects.toBeInstanceOf(BundleFormatError)
  })

  it('refuses a truncated header or section', async () => {
    const a = await block('a'.repeat(100))
    const bytes = await car([a.cid], [a])
    await expect(readAll(bytes.subarray(0, 10))).rejects.toBeInstanceOf(BundleTruncatedError)
    await expect(readAll(bytes.subarray(0, bytes.length - 1))).rejects.toBeInstanceOf(BundleTruncatedError)
  })

  it('checks every size against its limit before reading it', async () => {
    const a = await block('a'.repeat(100))
    const b = await block('b')
    const bytes = await car([a.cid, b.cid], [a, b])
    await expect(readAll(bytes, 1 << 20, { maxRoots: 1 })).rejects.toBeInstanceOf(BundleLimitError)
    await expect(readAll(bytes, 1 << 20, { maxBlockBytes: 50, maxCidBytes: 40 })).rejects.toBeInstanceOf(BundleLimitError)
    await expect(readAll(bytes, 1 << 20, { maxHeaderBytes: 10 })).rejects.toBeInstanceOf(BundleLimitError)
    // a header that says it is 2^40 bytes long: refused at once, nothing allocated or awaited
    await expect(readAll(Buffer.from([0x80, 0x80, 0x80, 0x80, 0x80, 0x20]))).rejects.toBeInstanceOf(BundleLimitError)
  })

  it('hands out CIDs of their own, not views of the input (kept in an index, a view kept its whole chunk alive)', async () => {
    const a = await block('a'.repeat(300_000))
    const b = await block('b'.repeat(300_000))
    const c = await readCar(pieces(await car([a.cid], [a, b]), 1 << 20))
    for await (const x of c.blocks) {
      expect(x.cid.bytes.buffer.byteLength).toBeLessThan(1024)
      expect(x.cid.multihash.bytes.buffer.byteLength).toBeLessThan(1024)
    }
  })
})
