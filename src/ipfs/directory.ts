import { createHash } from 'node:crypto'
import * as dagPb from '@ipld/dag-pb'
import { UnixFS } from 'ipfs-unixfs'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { create as createDigest } from 'multiformats/hashes/digest'
import { sha256 } from 'multiformats/hashes/sha2'
import { checkAbort, type BlockGetter } from './dag-reader.js'
import { InvalidOptionError, PathNotFoundError, UnexpectedDagError } from './errors.js'
import { importBytes } from './import.js'
import type { WritableStorage } from 'ipfs-unixfs-importer'

/** The blockstore operation publishing needs: store new nodes. */
export type DirectoryBlockstore = WritableStorage

/** An OCI image layout to publish as a UnixFS directory (the image root, docs/ipfs.md). */
export interface LayoutInput {
  /** The `oci-layout` file (bytes, or the CID of an imported copy). */
  ociLayout: Uint8Array | CID
  /** `index.json` (bytes or CID). */
  index: Uint8Array | CID
  /** Every blob of the image, already imported: linked as `blobs/<alg>/<hex>` without copying. */
  blobs: Iterable<{ digest: string, cid: CID }>
  /** More top-level files (e.g. the reference descriptor JSON). */
  extra?: Record<string, Uint8Array | CID>
}

export interface DirEntry {
  name: string
  cid: CID
  /** Cumulative size of the linked DAG (dag-pb Tsize). */
  tsize: number
}

const DIGEST = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/

/** `sha256:<hex>` → [`sha256`, `<hex>`], or a typed error for anything else. */
export function splitDigest (digest: string): [string, string] {
  const m = DIGEST.exec(digest)
  if (m == null) throw new InvalidOptionError(`not an OCI digest: ${JSON.stringify(digest)}`)
  return [m[1], m[2]]
}

/** Cumulative DAG size of `cid` from its root block alone: the block plus its links' Tsize. */
async function tsizeOf (cid: CID, getBlock: BlockGetter): Promise<number> {
  const bytes = await getBlock(cid)
  if (cid.code === raw.code) return bytes.length
  if (cid.code !== dagPb.code) throw new UnexpectedDagError(`${cid.toString()}: only dag-pb and raw can be linked from a directory`)
  return bytes.length + dagPb.decode(bytes).Links.reduce((n, l) => n + (l.Tsize ?? 0), 0)
}

async function putDirectory (blockstore: DirectoryBlockstore, entries: DirEntry[]): Promise<DirEntry & { blocks: number }> {
  const names = new Set<string>()
  for (const e of entries) {
    if (names.has(e.name)) throw new InvalidOptionError(`duplicate directory entry ${JSON.stringify(e.name)}`)
    names.add(e.name)
  }
  const node = dagPb.prepare({
    Data: new UnixFS({ type: 'directory' }).marshal(),
    Links: entries.map(e => ({ Name: e.name, Tsize: e.tsize, Hash: e.cid }))
  })
  const bytes = dagPb.encode(node)
  const cid = CID.createV1(dagPb.code, createDigest(sha256.code, createHash('sha256').update(bytes).digest()))
  await blockstore.put(cid, bytes)
  return { name: '', cid, tsize: bytes.length + entries.reduce((n, e) => n + e.tsize, 0), blocks: 1 }
}

/**
 * Publishes an OCI image layout as a UnixFS directory — `oci-layout`, `index.json`,
 * `blobs/<alg>/<hex>` — and returns its root CID. Blobs are linked by CID; only their root
 * blocks are read (for the links' Tsize), never their content.
 */
export async function publishLayout (blockstore: DirectoryBlockstore, getBlock: BlockGetter, input: LayoutInput, options: { signal?: AbortSignal } = {}): Promise<{ cid: CID, blocks: number }> {
  let blocks = 0
  const file = async (name: string, content: Uint8Array | CID): Promise<DirEntry> => {
    checkAbort(options.signal)
    let cid: CID
    if (content instanceof Uint8Array) {
      const r = await importBytes(blockstore, content)
      blocks += r.blocks
      cid = r.cid
    } else {
      cid = content
    }
    return { name, cid, tsize: await tsizeOf(cid, getBlock) }
  }
  const byAlg = new Map<string, Map<string, CID>>()
  for (const b of input.blobs) {
    const [alg, hex] = splitDigest(b.digest)
    let m = byAlg.get(alg)
    if (m == null) { m = new Map(); byAlg.set(alg, m) }
    const prev = m.get(hex)
    if (prev != null && !prev.equals(b.cid)) throw new InvalidOptionError(`blob ${b.digest} given twice with different CIDs`)
    m.set(hex, b.cid)
  }
  const algDirs: DirEntry[] = []
  for (const [alg, m] of byAlg) {
    const entries: DirEntry[] = []
    for (const [hex, cid] of m) entries.push(await file(hex, cid))
    const d = await putDirectory(blockstore, entries)
    blocks += d.blocks
    algDirs.push({ ...d, name: alg })
  }
  const blobsDir = await putDirectory(blockstore, algDirs)
  blocks += blobsDir.blocks
  const top: DirEntry[] = [
    await file('oci-layout', input.ociLayout),
    await file('index.json', input.index),
    { ...blobsDir, name: 'blobs' }
  ]
  for (const [name, content] of Object.entries(input.extra ?? {})) top.push(await file(name, content))
  const root = await putDirectory(blockstore, top)
  return { cid: root.cid, blocks: blocks + root.blocks }
}

/** Lists a (flat) UnixFS directory. */
export async function listDirectory (getBlock: BlockGetter, cid: CID, signal?: AbortSignal): Promise<DirEntry[]> {
  if (cid.code !== dagPb.code) throw new UnexpectedDagError(`${cid.toString()} is not a directory (codec 0x${cid.code.toString(16)})`)
  const pb = dagPb.decode(await getBlock(cid, signal))
  let type: string
  try {
    type = UnixFS.unmarshal(pb.Data ?? new Uint8Array(0)).type
  } catch (err) {
    throw new UnexpectedDagError(`${cid.toString()} is not a UnixFS node: ${(err as Error).message}`)
  }
  if (type === 'hamt-sharded-directory') throw new UnexpectedDagError(`${cid.toString()} is a sharded directory, which is not supported`)
  if (type !== 'directory') throw new UnexpectedDagError(`${cid.toString()} is a UnixFS ${type}, not a directory`)
  return pb.Links.map(l => ({ name: l.Name ?? '', cid: l.Hash, tsize: l.Tsize ?? 0 }))
}

/** Resolves a `/`-separated path under a directory CID. */
export async function resolvePath (getBlock: BlockGetter, root: CID, path: string, signal?: AbortSignal): Promise<CID> {
  let cid = root
  for (const part of path.split('/').filter(p => p !== '' && p !== '.')) {
    const entry = (await listDirectory(getBlock, cid, signal)).find(e => e.name === part)
    if (entry == null) throw new PathNotFoundError(root.toString(), path)
    cid = entry.cid
  }
  return cid
}

/** The CID of `blobs/<alg>/<hex>` in a published layout. */
export async function resolveBlob (getBlock: BlockGetter, root: CID, digest: string, signal?: AbortSignal): Promise<CID> {
  const [alg, hex] = splitDigest(digest)
  return await resolvePath(getBlock, root, `blobs/${alg}/${hex}`, signal)
}
