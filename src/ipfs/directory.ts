import { unixfs, type UnixFS } from '@helia/unixfs'
import * as dagPb from '@ipld/dag-pb'
import type { CID } from 'multiformats/cid'
import type { WritableStorage } from 'ipfs-unixfs-importer'
import { checkAbort, collectBlock, type BlockGetter } from './dag-reader.js'
import { InvalidOptionError, PathNotFoundError, UnexpectedDagError } from './errors.js'
import { importBytes } from './import.js'

/** An OCI image layout to publish as a UnixFS directory (the image root, docs/ipfs.md). */
export interface LayoutInput {
  /** The `oci-layout` file (bytes, or the CID of an imported copy). */
  ociLayout: Uint8Array | CID
  /** `index.json` (bytes or CID). */
  index: Uint8Array | CID
  /** Every blob of the image, already imported: linked as `blobs/<alg>/<hex>` without copying. */
  blobs: Iterable<{ digest: string, cid: CID }>
}

const DIGEST = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/

/** `sha256:<hex>` → [`sha256`, `<hex>`], or a typed error for anything else. */
function splitDigest (digest: string): [string, string] {
  const m = DIGEST.exec(digest)
  if (m == null) throw new InvalidOptionError(`not an OCI digest: ${JSON.stringify(digest)}`)
  return [m[1], m[2]]
}

/**
 * @helia/unixfs reading through `getBlock`, which is the node's fetch path with the caller's
 * `offline` already bound: every block it reads goes the way all our reads go. It never writes.
 */
export function unixfsOf (getBlock: BlockGetter): UnixFS {
  const readOnly = async (): Promise<never> => { throw new InvalidOptionError('this UnixFS view only reads') }
  return unixfs({
    blockstore: {
      get: async function * (cid, options) { yield await getBlock(cid, options?.signal) },
      has: readOnly,
      put: readOnly
    }
  })
}

/**
 * Publishes an OCI image layout as a UnixFS directory — `oci-layout`, `index.json`,
 * `blobs/<alg>/<hex>` — and returns its root CID. Blobs are linked by CID; only their root
 * blocks are read (for the links' Tsize), never their content. The directories are plain
 * (never HAMT-sharded, whatever their size), so a layout's CID depends on its entries only.
 */
export async function publishLayout (blockstore: WritableStorage, getBlock: BlockGetter, input: LayoutInput, options: { signal?: AbortSignal } = {}): Promise<{ cid: CID }> {
  const { signal } = options
  // `cp` stores a new directory node for every entry it adds: they are built here in memory, and
  // only the last node of each directory reaches the blockstore.
  const staged = new Map<string, Uint8Array>()
  const fs = unixfs({
    blockstore: {
      get: async function * (cid, o) { yield staged.get(cid.toString()) ?? await getBlock(cid, o?.signal) },
      has: async (cid) => staged.has(cid.toString()),
      put: async (cid, bytes) => {
        staged.set(cid.toString(), bytes instanceof Uint8Array ? bytes : await collectBlock(bytes))
        return cid
      }
    }
  })
  const directory = async (entries: Array<[string, CID]>): Promise<CID> => {
    let dir = await fs.addDirectory({}, { signal })
    for (const [name, cid] of entries) {
      checkAbort(signal)
      const next = await fs.cp(cid, dir, name, { signal, shardSplitThresholdBytes: Infinity })
      staged.delete(dir.toString())
      dir = next
    }
    await blockstore.put(dir, staged.get(dir.toString()) as Uint8Array, { signal })
    return dir
  }
  const file = async (content: Uint8Array | CID): Promise<CID> => {
    checkAbort(signal)
    return content instanceof Uint8Array ? (await importBytes(blockstore, content, { signal })).cid : content
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
  const algDirs: Array<[string, CID]> = []
  for (const [alg, m] of byAlg) algDirs.push([alg, await directory([...m])])
  return {
    cid: await directory([
      ['oci-layout', await file(input.ociLayout)],
      ['index.json', await file(input.index)],
      ['blobs', await directory(algDirs)]
    ])
  }
}

/**
 * Whether `cid` is a plain UnixFS directory (what `publishLayout` makes). A HAMT-sharded one is
 * refused where a path is resolved: listing it may read any number of shard blocks, where a
 * plain directory is one block.
 */
export async function isPlainDirectory (fs: UnixFS, cid: CID, signal?: AbortSignal): Promise<boolean> {
  if (cid.code !== dagPb.code) return false
  try {
    return (await fs.stat(cid, { signal })).unixfs?.type === 'directory'
  } catch (err) {
    // ipfs-unixfs-exporter's NotUnixFSError: dag-pb that is not UnixFS. Anything else (a block
    // nobody has, an abort) is the caller's to see.
    if ((err as Error).name === 'NotUnixFSError') return false
    throw err
  }
}

/**
 * Resolves a `/`-separated path under a plain directory CID: reads the directories on the way
 * (one block each), not the block the path ends at.
 */
export async function resolvePath (getBlock: BlockGetter, root: CID, path: string, signal?: AbortSignal): Promise<CID> {
  const fs = unixfsOf(getBlock)
  let cid = root
  for (const name of path.split('/').filter(p => p !== '' && p !== '.')) {
    if (!await isPlainDirectory(fs, cid, signal)) throw new UnexpectedDagError(`${cid.toString()} (on the way to ${path} under ${root.toString()}) is not a plain UnixFS directory`)
    let found: CID | undefined
    for await (const entry of fs.ls(cid, { signal })) {
      if (entry.name === name) { found = entry.cid; break }
    }
    if (found == null) throw new PathNotFoundError(root.toString(), path)
    cid = found
  }
  return cid
}

/** The CID of `blobs/<alg>/<hex>` in a published layout. */
export async function resolveBlob (getBlock: BlockGetter, root: CID, digest: string, signal?: AbortSignal): Promise<CID> {
  const [alg, hex] = splitDigest(digest)
  return await resolvePath(getBlock, root, `blobs/${alg}/${hex}`, signal)
}
