import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { describe, expect, it } from 'vitest'
import type { FileNode } from '../../src/ipfs/index.js'
import { extentsOf, type Span } from '../../src/mirror/blob-extents.js'

const cidOf = async (name: string, code = raw.code): Promise<CID> => CID.createV1(code, await sha256.digest(Buffer.from(name)))
const DAG_PB = 0x70

/** root → [a (100), b (200), x → [c (50)]]: 350 bytes in three leaves, one under an interior node. */
async function tree (): Promise<{ root: FileNode, nodes: Map<string, FileNode>, leaves: CID[] }> {
  const [a, b, c, x] = await Promise.all([cidOf('a'), cidOf('b'), cidOf('c'), cidOf('x', DAG_PB)])
  const nodes = new Map<string, FileNode>([[x.toString(), { data: new Uint8Array(0), children: [c], sizes: [50], size: 50 }]])
  const root: FileNode = { data: new Uint8Array(0), children: [a, b, x], sizes: [100, 200, 50], size: 350 }
  return { root, nodes, leaves: [a, b, c] }
}

async function extents (spans: Array<Span | undefined>, minRunBytes = 1, root?: FileNode): Promise<Awaited<ReturnType<typeof extentsOf>>> {
  const t = await tree()
  const byCid = new Map(t.leaves.map((c, i) => [c.toString(), spans[i]]))
  return await extentsOf(root ?? t.root, { node: async (cid) => t.nodes.get(cid.toString()) as FileNode }, {
    verifiedSpans: cids => cids.map(c => byCid.get(c.toString())),
    readVerified: async () => 0
  }, { minRunBytes, signal: new AbortController().signal })
}

describe('extentsOf', () => {
  it('leaves back to back in one pack are one run, across interior nodes', async () => {
    expect(await extents([{ pack: 1, offset: 1000, length: 100 }, { pack: 1, offset: 1100, length: 200 }, { pack: 1, offset: 1300, length: 50 }]))
      .toEqual([{ start: 0, span: { pack: 1, offset: 1000, length: 350 } }])
  })

  it('a gap, another pack or leaves out of order start a new run', async () => {
    expect(await extents([{ pack: 1, offset: 0, length: 100 }, { pack: 1, offset: 150, length: 200 }, { pack: 2, offset: 0, length: 50 }]))
      .toEqual([{ start: 0, span: { pack: 1, offset: 0, length: 100 } }, { start: 100, span: { pack: 1, offset: 150, length: 200 } }, { start: 300, span: { pack: 2, offset: 0, length: 50 } }])
    expect(await extents([{ pack: 1, offset: 200, length: 100 }, { pack: 1, offset: 0, length: 200 }, { pack: 1, offset: 300, length: 50 }]))
      .toHaveLength(3)
  })

  it('none when a leaf is not verified in the store, the file has inline bytes, or its runs average under minRunBytes', async () => {
    expect(await extents([{ pack: 1, offset: 0, length: 100 }, undefined, { pack: 1, offset: 300, length: 50 }])).toBeUndefined()
    const t = await tree()
    expect(await extents([{ pack: 1, offset: 0, length: 100 }, { pack: 1, offset: 100, length: 200 }, { pack: 1, offset: 300, length: 50 }], 1, { ...t.root, data: new Uint8Array(5), size: 355 })).toBeUndefined()
    const scattered = [{ pack: 1, offset: 0, length: 100 }, { pack: 1, offset: 500, length: 200 }, { pack: 1, offset: 900, length: 50 }]
    expect(await extents(scattered, 116)).toHaveLength(3) // 350 bytes in 3 runs: 116 on average
    expect(await extents(scattered, 117)).toBeUndefined()
  })
})
