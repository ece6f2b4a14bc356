import type { CID } from 'multiformats/cid'
import { AbortError, isAbortError } from '../errors.js'
import {
  IpfsImageReader, UnixfsFileReader, cidOfDescriptor, resolvePath, unixfsOf,
  type BlockFetchPath, type BlockGetter, type DigestMapping, type ImageRecord
} from '../ipfs/index.js'
import { Digester, parseDigest, resolveImages, REF_NAME_ANNOTATION, type Descriptor } from '../oci/index.js'
import { BundleBlobDigestError, BundleError, BundleIncompleteError, BundleNotAnImageError } from './errors.js'

/** Bytes of a blob read at a time while its digest is checked. */
const VERIFY_STEP = 1 << 20

/** An image found under a root, checked, ready to be listed. */
export interface CheckedImage {
  record: ImageRecord
  digests: DigestMapping[]
}

/** What the checks read blocks through: only blocks reachable from the roots. */
export interface CheckedBlocks {
  blocks: BlockFetchPath
  getBlock: BlockGetter
}

/** Runs `fn`; an error that is not ours (a malformed manifest, a bad DAG node) says the root is no image. */
async function asImage<T> (root: CID, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (err) {
    if (err instanceof BundleError || isAbortError(err)) throw err
    throw new BundleNotAnImageError(`root ${root.toString()} is not an image: ${(err as Error).message}`, { cause: err })
  }
}

/** Every `blobs/<alg>/<hex>` entry of a layout directory, as digest → CID. */
async function layoutBlobs (getBlock: BlockGetter, root: CID, signal?: AbortSignal): Promise<Map<string, CID>> {
  const fs = unixfsOf(getBlock)
  const out = new Map<string, CID>()
  const blobs = await resolvePath(getBlock, root, 'blobs', signal)
  for await (const alg of fs.ls(blobs, { signal })) {
    for await (const entry of fs.ls(alg.cid, { signal })) out.set(`${alg.name}:${entry.name}`, entry.cid)
  }
  return out
}

/** Reads a blob through the UnixFS DAG and checks it hashes to `digest` (and has `size`, when known). */
async function verifyBlob (getBlock: BlockGetter, root: CID, digest: string, cid: CID, size: number | undefined, signal?: AbortSignal): Promise<number> {
  let algorithm
  try {
    algorithm = parseDigest(digest).algorithm
  } catch (err) {
    throw new BundleBlobDigestError(`image ${root.toString()}: blob ${JSON.stringify(digest)} is not named by a digest we can check`, { cause: err })
  }
  const reader = await UnixfsFileReader.open(cid, getBlock, { signal })
  if (size != null && reader.size !== size) throw new BundleBlobDigestError(`image ${root.toString()}: blob ${digest} (${cid.toString()}) is ${reader.size} bytes, its descriptor says ${size}`)
  const d = new Digester(algorithm)
  for (let at = 0; at < reader.size; at += VERIFY_STEP) d.update(await reader.read(at, Math.min(VERIFY_STEP, reader.size - at), signal))
  const actual = d.digest()
  if (actual !== digest) throw new BundleBlobDigestError(`image ${root.toString()}: blob ${cid.toString()} is named ${digest} but its bytes hash to ${actual}`)
  return reader.size
}

interface FoundImage { root: CID, desc: Descriptor, checked: CheckedImage, blobs: Map<string, CID> }

/**
 * Checks that every root is an image and every blob of it is what it claims to be: the root is
 * an OCI layout directory whose index, manifests and configs parse, every blob its manifests
 * name is in the bundle, and every blob — each `blobs/<alg>/<hex>` entry and each blob a
 * descriptor names by `ipfs://` URL — hashes to its digest (and size). A root may also be an
 * image's descriptor JSON, when the image's layout is a root too (what `export` writes). Returns
 * the records to list, with their digest→CID mappings. Reads only through `blocks`.
 */
export async function checkImages (components: CheckedBlocks, roots: CID[], options: { signal?: AbortSignal, name?: string, now?: Date } = {}): Promise<CheckedImage[]> {
  const { signal } = options
  const { blocks, getBlock } = components
  const layouts: FoundImage[] = []
  const descriptors: Array<{ root: CID, desc: Descriptor }> = []
  const created = (options.now ?? new Date()).toISOString()
  const uniqueRoots = [...new Map(roots.map(r => [r.toString(), r])).values()]
  for (const root of uniqueRoots) {
    if (signal?.aborted === true) throw new AbortError()
    const reader = await asImage(root, async () => await IpfsImageReader.open(blocks, root, { offline: true, signal }))
    const desc = await reader.root()
    if (reader.directory == null) {
      descriptors.push({ root, desc })
      continue
    }
    const found = await asImage(root, async () => {
      const res = await resolveImages(reader, { signal })
      const blobs = await layoutBlobs(getBlock, root, signal)
      // every (digest, CID) pair the image names: the layout's entries and the descriptors' URLs
      const pairs = new Map<string, { digest: string, cid: CID, size?: number }>()
      for (const [digest, cid] of blobs) pairs.set(`${digest} ${cid.toString()}`, { digest, cid })
      const referenced = new Map<string, Descriptor>()
      for (const d of [res.root, ...res.indexes.map(i => i.descriptor), ...res.indexes.flatMap(i => i.index.manifests), ...res.images.flatMap(i => [i.descriptor, i.manifest.config, ...i.layers])]) {
        referenced.set(d.digest, d)
      }
      for (const d of referenced.values()) {
        const cid = await reader.cidOf(d, signal)
        const key = `${d.digest} ${cid.toString()}`
        pairs.set(key, { digest: d.digest, cid, size: d.size })
      }
      for (const p of pairs.values()) await verifyBlob(getBlock, root, p.digest, p.cid, p.size, signal)
      const record: ImageRecord = {
        root: root.toString(),
        name: options.name ?? `ipfs://${root.toString()}`,
        created,
        size: [...referenced.values()].reduce((n, d) => n + d.size, 0),
        meta: {
          ...(desc.annotations?.[REF_NAME_ANNOTATION] != null ? { tag: desc.annotations[REF_NAME_ANNOTATION] } : {}),
          mediaType: desc.mediaType,
          digest: desc.digest,
          source: 'bundle'
        }
      }
      const digests = [...pairs.values()].map(p => ({ digest: p.digest, cid: p.cid }))
      return { root, desc, blobs, checked: { record, digests } }
    })
    layouts.push(found)
  }
  // A descriptor JSON names its image's root manifest (or index) by digest and ipfs:// URL: it
  // belongs to the layout whose index.json lists that blob with that CID.
  for (const { root, desc } of descriptors) {
    const url = cidOfDescriptor(desc)
    const owner = layouts.find(l => l.desc.digest === desc.digest && url != null && l.blobs.get(desc.digest)?.equals(url) === true)
    if (owner == null) throw new BundleNotAnImageError(`root ${root.toString()} is an image descriptor, but the bundle holds no image layout with its blob ${desc.digest}${url != null ? ` at ${url.toString()}` : ''} (a bundle carries images as OCI layout directories)`)
    owner.checked.record.descriptor = root.toString()
  }
  if (layouts.length === 0) throw new BundleNotAnImageError('the bundle has no image root')
  return layouts.map(l => l.checked)
}

/** A BlockFetchPath and BlockGetter over `get`, refusing what `allowed` does not hold. */
export function checkedBlocks (root: () => string, allowed: Set<string>, get: (cid: CID) => Promise<Uint8Array>): CheckedBlocks {
  const getBlock: BlockGetter = async (cid, signal) => {
    if (signal?.aborted === true) throw new AbortError()
    if (!allowed.has(cid.toString())) throw new BundleIncompleteError(root(), cid.toString())
    return await get(cid)
  }
  return {
    getBlock,
    blocks: { get: async function * (cid, options) { yield await getBlock(cid, options?.signal) } }
  }
}
