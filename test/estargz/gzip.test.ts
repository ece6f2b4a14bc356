import { gzipSync } from 'node:zlib'
import { describe, expect, it } from 'vitest'
import { gunzipStream } from '../../src/estargz/gzip.js'

class TooLarge extends Error {}

async function collect (pieces: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const out: Uint8Array[] = []
  for await (const p of pieces) out.push(p)
  return out
}

/** JSON-like text that compresses about as a TOC does. */
function tocLike (bytes: number): Buffer {
  const parts: string[] = []
  for (let i = 0, n = 0; n < bytes; i++) {
    const s = `{"name":"usr/lib/python3.11/module${i}.py","type":"reg","size":${i * 37 % 9000},"offset":${i * 811},"chunkDigest":"sha256:${(i * 2654435761 % 2 ** 32).toString(16).padStart(64, '0')}"},`
    parts.push(s)
    n += s.length
  }
  return Buffer.from(parts.join('')).subarray(0, bytes)
}

describe('gunzipStream', () => {
  it('inflates a TOC-sized member in one or two pieces (each piece is a trip through the thread pool), bytes equal', async () => {
    const json = tocLike(2 << 20)
    const pieces = await collect(gunzipStream(gzipSync(json), 4 << 20, () => new TooLarge()))
    expect(pieces.length).toBeLessThanOrEqual(2)
    expect(Buffer.concat(pieces).equals(json)).toBe(true)
  })

  it('still stops at the cap when a piece is large: a member that inflates past it fails with the caller\'s error', async () => {
    const bomb = gzipSync(Buffer.alloc(32 << 20))
    await expect(collect(gunzipStream(bomb, 1 << 20, () => new TooLarge('cap')))).rejects.toBeInstanceOf(TooLarge)
  })
})
