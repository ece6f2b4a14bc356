import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { describe, expect, it } from 'vitest'
import type { CID } from 'multiformats/cid'
import { UnixfsFileReader } from '../../src/ipfs/dag-reader.js'
import { OpenLinks } from '../../src/ipfs/open-links.js'
import { leafMap, MemStore, random } from './helpers.js'

/**
 * The blocks a node would fetch for itself (what it may fetch for a peer, see sharing.test.ts):
 * the links of the DAG nodes its open readers decoded, forgotten when the last reader of them closes.
 */

/** 60 leaves of 1000 bytes, 4 links a node: root → 4 → 15 → 60. */
async function deepFile (): Promise<{ store: MemStore, cid: CID }> {
  const store = new MemStore()
  let cid: CID | undefined
  for await (const e of importer([{ content: [random(60_000)] }], store, { cidVersion: 1, rawLeaves: true, chunker: fixedSize({ chunkSize: 1000 }), layout: balanced({ maxChildrenPerNode: 4 }) })) cid = e.cid
  return { store, cid: cid as CID }
}

describe('OpenLinks', () => {
  it('a reader registers the links of every node it decodes, and forgets them when it closes', async () => {
    const { store, cid } = await deepFile()
    const links = new OpenLinks()
    const reader = await UnixfsFileReader.open(cid, store.getBlock, { links: links.open() })
    expect(links.size).toBe(4) // the root's children, at open
    const leaves = await leafMap(store.getBlock, cid)
    expect(links.has(leaves[0].cid)).toBe(false) // not reached yet
    await reader.read(0, 60_000)
    expect(links.size).toBe(4 + 15 + 60)
    expect(leaves.every(l => links.has(l.cid))).toBe(true)
    expect(links.has(cid)).toBe(false) // the root is no link of this DAG
    // a second reader of the same layer: the links stay until both have closed
    const second = await UnixfsFileReader.open(cid, store.getBlock, { links: links.open() })
    reader.close()
    expect(links.size).toBe(4)
    second.close()
    second.close()
    expect(links.size).toBe(0)
  })

  it('remembers at most maxLinks', async () => {
    const { store, cid } = await deepFile()
    const links = new OpenLinks({ maxLinks: 10 })
    const reader = await UnixfsFileReader.open(cid, store.getBlock, { links: links.open() })
    await reader.read(0, 60_000)
    expect(links.size).toBe(10)
    expect(links.dropped).toBe(4 + 15 + 60 - 10)
    reader.close()
    expect(links.size).toBe(0)
  })
})
