import { CarWriter } from '@ipld/car/writer'
import { CID } from 'multiformats/cid'
import { AbortError, isAbortError } from '../errors.js'
import {
  BlockNotFoundError, IpfsImageReader, collectBlock, parseIpfsRef, walkDag,
  type BlockFetchPath, type IndexStore
} from '../ipfs/index.js'
import type { Logger } from '../logging.js'
import { resolveImages } from '../oci/index.js'
import { BundleError, BundleNotAnImageError, ExportIncompleteError, UnknownImageError } from './errors.js'
import type { BundleProgress } from './import.js'

/** Export defaults, in one place. */
export const EXPORT_DEFAULTS = {
  /** The CAR's small pieces are gathered into writes of this many bytes. */
  writeBufferBytes: 1 << 20,
  /** Leaves read ahead of the one being written (each ≤ 1 MiB for our images, ≤ 4 MiB at most). */
  readAhead: 16
} as const

export interface ExportComponents {
  /** The node's fetch path (local blockstore first; peers and gateways only with `fetch`). */
  blocks: BlockFetchPath
  /** The local blockstore's `has`: the completeness check reads no leaf. */
  has: (cid: CID) => Promise<boolean>
  index: IndexStore
  logger: Logger
}

export interface ExportOptions {
  /** Images: root CIDs (ipfs://CID, /ipfs/CID, CID), descriptor CIDs, or names `image ls` lists. */
  refs: string[]
  /** Fetch blocks the repo lacks from the node's peers and gateways (default: refuse). */
  fetch?: boolean
  signal?: AbortSignal
  /** Where the CAR's bytes go, in order; awaited (backpressure). */
  sink: (chunk: Uint8Array) => Promise<void>
  onProgress?: (p: BundleProgress) => void
}

export interface ExportedImage {
  root: string
  descriptor?: string
  name?: string
}

export interface ExportResult {
  /** The CAR's roots, in order: each image's layout directory, then its descriptor JSON if it has one. */
  roots: string[]
  images: ExportedImage[]
  blocks: number
  /** Bytes of the blocks, and of the CAR written. */
  bytes: number
  carBytes: number
}

/** The images `refs` name, each once. */
function resolveRefs (index: IndexStore, refs: string[]): ExportedImage[] {
  const records = index.images.list()
  const out = new Map<string, ExportedImage>()
  for (const ref of refs) {
    let cid: CID | undefined
    try { cid = parseIpfsRef(ref) } catch { cid = undefined }
    let image: ExportedImage | undefined
    if (cid != null) {
      const key = cid.toString()
      const rec = records.find(r => r.root === key) ?? records.find(r => r.descriptor === key)
      image = rec != null ? { root: rec.root, descriptor: rec.descriptor, name: rec.name } : { root: key }
    } else {
      const rec = records.filter(r => r.name === ref).at(-1) // the newest of that name
      if (rec == null) throw new UnknownImageError(ref)
      image = { root: rec.root, descriptor: rec.descriptor, name: rec.name }
    }
    if (!out.has(image.root)) out.set(image.root, image)
  }
  return [...out.values()]
}

/**
 * Writes images as one CARv1 bundle: every block under each image's layout directory (index,
 * manifests, configs, layers: all of it, depth-first from the root) and its descriptor JSON,
 * each block once however many images share it; the roots are the layout directories and the
 * descriptors. Memory is bounded: blocks are read, written and dropped one at a time.
 *
 * Before the first byte goes out, each image is opened as an image and checked complete in the
 * repo (ExportIncompleteError names the first missing block), so a refusal writes nothing. With
 * `fetch`, missing blocks are fetched (and stored) first.
 */
export async function exportBundle (components: ExportComponents, options: ExportOptions): Promise<ExportResult> {
  const { signal } = options
  const offline = options.fetch !== true
  const images = resolveRefs(components.index, options.refs)
  if (images.length === 0) throw new UnknownImageError('')
  let current = ''
  const getBlock = async (cid: CID, s?: AbortSignal): Promise<Uint8Array> => {
    try {
      return await collectBlock(components.blocks.get(cid, { signal: s ?? signal, offline }))
    } catch (err) {
      if (err instanceof BlockNotFoundError) throw new ExportIncompleteError(current, cid.toString(), { cause: err })
      throw err
    }
  }
  const fetchPath: BlockFetchPath = { get: async function * (cid, o) { yield await getBlock(cid, o?.signal) } }

  // Each root an image, complete here: nothing is written before this holds.
  const roots: CID[] = []
  for (const img of images) {
    current = img.root
    const root = CID.parse(img.root)
    try {
      const reader = await IpfsImageReader.open(fetchPath, root, { offline, signal })
      if (reader.directory == null) throw new BundleNotAnImageError(`${img.root} is an image descriptor, not its layout directory: export the image by its root CID or name`)
      await resolveImages(reader, { signal })
    } catch (err) {
      if (err instanceof BundleError || isAbortError(err)) throw err
      throw new BundleNotAnImageError(`${img.root} is not an image: ${(err as Error).message}`, { cause: err })
    }
    roots.push(root)
    if (img.descriptor != null) roots.push(CID.parse(img.descriptor))
  }
  const checked = new Set<string>()
  for (const root of roots) {
    current = root.toString()
    const missing = (cid: CID): Error => new ExportIncompleteError(current, cid.toString())
    for await (const _ of walkDag(root, getBlock, { signal, seen: checked, ...(offline ? { has: components.has, missing } : {}) })) { /* checks */ }
  }

  // Write: the CAR's pieces gathered into writes of writeBufferBytes, each awaited.
  const { writer, out } = CarWriter.create(roots)
  let carBytes = 0
  let pending: Uint8Array[] = []
  let pendingBytes = 0
  const flush = async (): Promise<void> => {
    if (pendingBytes === 0) return
    const chunk = pending.length === 1 ? pending[0] : Buffer.concat(pending, pendingBytes)
    pending = []
    pendingBytes = 0
    await options.sink(chunk)
  }
  let consumerFailed: (err: unknown) => void = () => {}
  const failed = new Promise<never>((_resolve, reject) => { consumerFailed = reject })
  failed.catch(() => {})
  const consumer = (async () => {
    for await (const piece of out) {
      pending.push(piece)
      pendingBytes += piece.length
      carBytes += piece.length
      if (pendingBytes >= EXPORT_DEFAULTS.writeBufferBytes) await flush()
    }
    await flush()
  })().catch((err: unknown) => { consumerFailed(err); throw err })

  const written = new Set<string>()
  let blocks = 0
  let bytes = 0
  try {
    const emit = async (b: { cid: CID, bytes: Uint8Array }): Promise<void> => {
      await Promise.race([writer.put(b), failed])
      blocks++
      bytes += b.bytes.length
      if (blocks % 256 === 0) options.onProgress?.({ phase: 'write', blocks, bytes })
    }
    for (const root of roots) {
      current = root.toString()
      // The walk reads interior nodes; leaves (known present: checked above) are read
      // readAhead at a time, written in the walk's order.
      const window: Array<Promise<{ cid: CID, bytes: Uint8Array }>> = []
      for await (const b of walkDag(root, getBlock, { signal, seen: written, has: async () => true })) {
        const next = b.bytes != null ? Promise.resolve({ cid: b.cid, bytes: b.bytes }) : getBlock(b.cid).then(bytes => ({ cid: b.cid, bytes }))
        next.catch(() => {}) // awaited in turn below; a failure is not left unhandled meanwhile
        window.push(next)
        if (window.length >= EXPORT_DEFAULTS.readAhead) await emit(await (window.shift() as Promise<{ cid: CID, bytes: Uint8Array }>))
      }
      while (window.length > 0) await emit(await (window.shift() as Promise<{ cid: CID, bytes: Uint8Array }>))
    }
    await Promise.race([writer.close(), failed])
    await consumer
  } catch (err) {
    // End the channel (not awaited: with the consumer gone it would never drain) and wait for
    // the consumer to stop.
    writer.close().catch(() => {})
    await consumer.catch(() => {})
    throw err
  }
  if (signal?.aborted === true) throw new AbortError()
  options.onProgress?.({ phase: 'write', blocks, bytes })
  components.logger.child({ component: 'bundle-export' }).info({ roots: roots.map(String), blocks, bytes, carBytes }, 'bundle written')
  return { roots: roots.map(String), images, blocks, bytes, carBytes }
}
