import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { decodeFileNode } from '../../src/ipfs/dag-reader.js'
import { createNode, type IpfsNode } from '../../src/ipfs/node.js'
import { silentLogger } from '../../src/logging.js'

export async function * streamOf (bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes
}

/** Pseudo-random but compressible-ish bytes are not needed: random bytes keep members large. */
export function random (n: number): Uint8Array {
  return randomBytes(n)
}

/**
 * Temp repos under one root, removed in `cleanup` after a 1.5 s wait: Helia writes its own peer
 * record up to ~1 s after stop (npm-stack pitfall 15).
 */
export class TempRepos {
  private root: string | undefined
  private readonly nodes: IpfsNode[] = []
  private n = 0

  async dir (): Promise<string> {
    this.root ??= await mkdtemp(join(tmpdir(), 'ipfs-estargz-test-'))
    return join(this.root, `repo-${this.n++}`)
  }

  /** A fresh empty folder under the same root (for CAR files and the like). */
  async scratch (): Promise<string> {
    const d = (await this.dir()) + '-scratch'
    await mkdir(d, { recursive: true })
    return d
  }

  async node (opts: { repo?: string, listen?: string[] } = {}): Promise<IpfsNode> {
    const node = await createNode({ repo: opts.repo ?? await this.dir(), listen: opts.listen, logger: silentLogger() })
    this.nodes.push(node)
    return node
  }

  async cleanup (): Promise<void> {
    for (const n of this.nodes) await n.stop().catch(() => {})
    if (this.root == null) return
    await new Promise(resolve => setTimeout(resolve, 1500))
    await rm(this.root, { recursive: true, force: true })
  }
}

/** A blockstore in memory, for unit tests that need no node. Counts gets. */
export class MemStore {
  readonly blocks = new Map<string, Uint8Array>()
  gets = 0
  async put (cid: CID, bytes: Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>): Promise<CID> {
    const parts: Uint8Array[] = []
    if (bytes instanceof Uint8Array) parts.push(bytes)
    else for await (const p of bytes) parts.push(p)
    this.blocks.set(cid.toString(), Buffer.concat(parts))
    return cid
  }

  async has (cid: CID): Promise<boolean> {
    return this.blocks.has(cid.toString())
  }

  async delete (cid: CID): Promise<void> {
    this.blocks.delete(cid.toString())
  }

  getBlock = async (cid: CID): Promise<Uint8Array> => {
    this.gets++
    const b = this.blocks.get(cid.toString())
    if (b == null) throw new Error(`no block ${cid.toString()}`)
    return b
  }
}

/** Every leaf of a UnixFS file in order: its offset in the file, size and CID. */
export async function leafMap (getBlock: (cid: CID) => Promise<Uint8Array>, root: CID): Promise<Array<{ offset: number, size: number, cid: CID }>> {
  const out: Array<{ offset: number, size: number, cid: CID }> = []
  const visit = async (cid: CID, offset: number): Promise<void> => {
    const node = decodeFileNode(cid, await getBlock(cid))
    if (node.children.length === 0) {
      out.push({ offset, size: node.size, cid })
      return
    }
    let at = offset + node.data.length
    for (let i = 0; i < node.children.length; i++) {
      await visit(node.children[i], at)
      at += node.sizes[i]
    }
  }
  await visit(root, 0)
  return out
}

/** Polls `cond` every 10 ms until it holds, or fails naming `what` after `ms`. */
export async function until (cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}

/** A random raw block for which `fits` holds (1.2.0 ranks nodes per block: tests pick blocks by rank). */
export async function blockWhere (fits: (cid: CID) => boolean, size = 20_000): Promise<{ cid: CID, bytes: Uint8Array }> {
  for (;;) {
    const bytes = random(size)
    const cid = CID.createV1(raw.code, await sha256.digest(bytes))
    if (fits(cid)) return { cid, bytes }
  }
}
