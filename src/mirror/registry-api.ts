import type { IncomingMessage, ServerResponse } from 'node:http'
import { createHash } from 'node:crypto'
import { CID } from 'multiformats/cid'
import { LRUCache } from 'lru-cache'
import { BlockNotFoundError, PathNotFoundError, decodeFileNode, type BlockGetter, type FileNode } from '../ipfs/index.js'
import { streamFile, type LeafSource } from './blob-stream.js'
import { BufferPool, extentsOf, sendExtents, type Extent, type SpanStore } from './blob-extents.js'
import { isDigest, isManifestOrIndexMediaType, type Descriptor } from '../oci/index.js'
import type { Logger } from '../logging.js'
import { DistributionError } from './errors.js'
import { parseRange, sendStream } from './http.js'
import { isValidName, isValidTag } from './names.js'
import { cidOfName, isRootTag, type ImageView, type ImageViews, type MirrorIndex } from './images.js'


export interface RegistryApiComponents {
  views: ImageViews
  index: MirrorIndex
  /** Whether a block is in the local blockstore (an `ipfs/<cid>` name needs its root here). */
  hasLocal: (cid: CID) => Promise<boolean>
  /** The fetch path, each block checked against its CID. */
  getBlock: BlockGetter
  /** Many blocks of the local store at once, each checked against its CID (`LeafSource.readMany`). */
  readMany?: LeafSource['readMany']
  /**
   * Where verified blocks lie in the local store's files, and reading them back (the pack
   * store has it): a blob read whole once is then sent as runs of a file.
   */
  spans?: SpanStore
  logger: Logger
}

export interface RegistryApiOptions {
  /** Leaves fetched at once through the fetch path (not in the local store) while a blob streams. */
  concurrency: number
  /** Leaves, and their bytes, read from the local store at once; bytes of them read ahead. */
  batchLeaves: number
  batchBytes: number
  aheadBytes: number
  /** Decoded file nodes (roots and interior nodes of blobs) kept for the next request. */
  cachedNodes: number
  /** Blob digests remembered as matching the file under their CID. */
  matchedBlobs: number
  /** Extents kept, over all blobs (sent as file runs); bytes of one read and write of them. */
  cachedExtents: number
  extentBytes: number
  /** A blob whose runs average fewer bytes than this is sent block by block (`extentsOf`). */
  minExtentBytes: number
  /** Buffers of `extentBytes` kept for reuse across answers. */
  extentBuffers: number
  /** ms to look up a blob's extents (a walk of its nodes and an index lookup per leaf). */
  learnTimeoutMs: number
  /** A manifest larger than this is not served. */
  maxManifestBytes: number
}

const unknown = (code: 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN' | 'NAME_UNKNOWN', message: string, detail?: unknown): DistributionError =>
  new DistributionError(404, code, message, detail)

/**
 * The read side of the OCI Distribution API over images in IPFS: `GET /v2/`, and GET/HEAD of
 * `/v2/<name>/manifests/<tag|digest>` and `/v2/<name>/blobs/<digest>` (with `Range`). A name is
 * `ipfs/<cid>` (any image whose root block is local) or one given with `ipfs-estargz tag`.
 * Only blobs the named image references are served.
 */
export class RegistryApi {
  /**
   * Blob answers (whole and ranged) and the blob bytes sent; answers sent from a blob's extents,
   * and those of them that went on the ordinary way when an extent was gone (a pack compacted).
   */
  readonly counts = { blobs: 0, ranges: 0, blobBytes: 0, extentAnswers: 0, extentMisses: 0 }

  /** Decoded file nodes, by CID: a range request reads the root and the interior node above it again. */
  private readonly nodes: LRUCache<string, FileNode>
  /** `digest CID` pairs whose whole file was hashed and matched. */
  private readonly matched: LRUCache<string, true>
  /** Where blobs read whole lie in the local store, by CID (`extentsOf`), and those being looked up. */
  private readonly extents: LRUCache<string, Extent[]>
  private readonly finding = new Set<string>()
  private readonly pool: BufferPool
  private readonly source: LeafSource

  constructor (private readonly components: RegistryApiComponents, private readonly options: RegistryApiOptions) {
    this.nodes = new LRUCache({ max: options.cachedNodes })
    this.matched = new LRUCache({ max: options.matchedBlobs })
    this.extents = new LRUCache({ maxSize: options.cachedExtents, sizeCalculation: extents => Math.max(1, extents.length) })
    this.pool = new BufferPool(options.extentBytes, options.extentBuffers)
    this.source = { getBlock: components.getBlock, readMany: components.readMany, node: async (cid, signal) => await this.node(cid, signal) }
  }

  /** A file node, decoded (from the cache, or fetched through the fetch path and checked). */
  private async node (cid: CID, signal: AbortSignal): Promise<FileNode> {
    const key = cid.toString()
    let node = this.nodes.get(key)
    if (node == null) {
      node = decodeFileNode(cid, await this.components.getBlock(cid, signal))
      this.nodes.set(key, node)
    }
    return node
  }

  async handle (req: IncomingMessage, res: ServerResponse, path: string, signal: AbortSignal): Promise<void> {
    res.setHeader('Docker-Distribution-API-Version', 'registry/2.0')
    if (path === '/v2/' || path === '/v2') {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': '2' })
      res.end(req.method === 'HEAD' ? undefined : '{}')
      return
    }
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(path)
    if (m == null) throw new DistributionError(404, 'NAME_UNKNOWN', 'no such route of the registry API', { path })
    const [, name, kind, reference] = m
    if (!isValidName(name)) throw new DistributionError(400, 'NAME_INVALID', 'invalid repository name', { name })
    if (kind === 'manifests') await this.manifest(req, res, name, reference, signal)
    else await this.blob(req, res, name, reference, signal)
  }

  private async open (cid: CID, name: string): Promise<ImageView> {
    try {
      return await this.components.views.open(cid)
    } catch (err) {
      this.components.logger.debug({ name, err: (err as Error).message }, 'image cannot be opened')
      throw unknown('NAME_UNKNOWN', `repository ${name} cannot be read as an image: ${(err as Error).message}`, { name })
    }
  }

  /**
   * The images a name stands for: `ipfs/<cid>` one (its root block must be local), a tagged
   * name those its tags point at (only the one of `tag` when given). NAME_UNKNOWN when none.
   */
  private async views (name: string, tag?: string): Promise<ImageView[]> {
    const cid = cidOfName(name)
    if (cid != null) {
      if (!await this.components.hasLocal(cid)) throw unknown('NAME_UNKNOWN', 'repository name not known to registry', { name })
      return [await this.open(cid, name)]
    }
    const { tags } = this.components.index
    if (!tags.hasName(name)) throw unknown('NAME_UNKNOWN', 'repository name not known to registry', { name })
    const roots = tag != null ? [tags.get(name, tag)].filter((r): r is string => r != null) : tags.rootsOf(name)
    const out: ImageView[] = []
    for (const root of roots) out.push(await this.open(CID.parse(root), name))
    return out
  }

  /** The descriptor `reference` names under `name`, and the image it is in. */
  private async find (name: string, reference: string, byDigest: boolean): Promise<{ view: ImageView, desc: Descriptor } | undefined> {
    const tagged = cidOfName(name) == null && !byDigest
    for (const view of await this.views(name, tagged ? reference : undefined)) {
      const desc = byDigest ? view.blobs.get(reference) : (tagged || isRootTag(view, reference) ? view.rootDesc : undefined)
      if (desc != null) return { view, desc }
    }
    return undefined
  }

  private async manifest (req: IncomingMessage, res: ServerResponse, name: string, reference: string, signal: AbortSignal): Promise<void> {
    const byDigest = isDigest(reference)
    if (!byDigest && !isValidTag(reference)) throw new DistributionError(400, 'TAG_INVALID', 'invalid tag', { tag: reference })
    const found = await this.find(name, reference, byDigest)
    if (found == null || !isManifestOrIndexMediaType(found.desc.mediaType)) throw unknown('MANIFEST_UNKNOWN', 'manifest unknown', { name, reference })
    const { view, desc } = found
    if (desc.size > this.options.maxManifestBytes) throw unknown('MANIFEST_UNKNOWN', `manifest of ${desc.size} bytes is over the limit of ${this.options.maxManifestBytes}`, { name, reference })
    let bytes: Uint8Array
    try {
      bytes = await view.reader.fetchBytes(desc, { signal, maxBytes: this.options.maxManifestBytes })
    } catch (err) {
      if (signal.aborted) throw err
      throw unavailable('MANIFEST_UNKNOWN', desc.digest, err)
    }
    res.writeHead(200, {
      'Content-Type': desc.mediaType,
      'Content-Length': String(bytes.length),
      'Docker-Content-Digest': desc.digest,
      ETag: `"${desc.digest}"`
    })
    res.end(req.method === 'HEAD' ? undefined : bytes)
  }

  private async blob (req: IncomingMessage, res: ServerResponse, name: string, digest: string, signal: AbortSignal): Promise<void> {
    if (!isDigest(digest)) throw new DistributionError(400, 'DIGEST_INVALID', 'invalid digest', { digest })
    const found = await this.find(name, digest, true)
    if (found == null) throw unknown('BLOB_UNKNOWN', 'blob unknown to registry', { name, digest })
    const { view, desc } = found
    let file: FileNode
    let cid: CID
    try {
      cid = await view.reader.cidOf(desc, signal)
      file = await this.node(cid, signal)
    } catch (err) {
      if (signal.aborted) throw err
      throw unavailable('BLOB_UNKNOWN', digest, err)
    }
    if (file.size !== desc.size) throw new DistributionError(500, 'UNKNOWN', `blob ${digest} holds ${file.size} bytes, its descriptor says ${desc.size}`)
    const size = file.size
    const headers: Record<string, string> = {
      'Content-Type': contentTypeOf(desc),
      'Docker-Content-Digest': digest,
      'Accept-Ranges': 'bytes',
      ETag: `"${digest}"`
    }
    const range = parseRange(req.headers.range, size)
    if (range === 'unsatisfiable') {
      res.writeHead(416, { ...headers, 'Content-Range': `bytes */${size}`, 'Content-Type': 'application/json' })
      res.end(errorBody('RANGE_INVALID', 'requested range not satisfiable', { size }))
      return
    }
    const { start, end } = range ?? { start: 0, end: size - 1 }
    res.writeHead(range != null ? 206 : 200, {
      ...headers,
      'Content-Length': String(end - start + 1),
      ...(range != null ? { 'Content-Range': `bytes ${start}-${end}/${size}` } : {})
    })
    if (req.method === 'HEAD' || size === 0) { res.end(); return }
    this.counts.blobs++
    if (range != null) this.counts.ranges++
    // The whole blob is checked against its digest as it goes: a mismatch ends the answer
    // before its last byte, so the client never receives a complete wrong blob. Once the file
    // under a CID matched a digest it always does (every block of it is checked against its
    // CID on every read): that pair is not hashed again.
    const pair = `${digest} ${cid.toString()}`
    const key = cid.toString()
    const matched = this.matched.has(pair)
    const extents = range != null || matched ? this.extents.get(key) : undefined
    const spans = this.components.spans
    let from = start
    if (extents != null && spans != null) {
      // A blob read whole before, every leaf verified in the store: sent as runs of its files.
      this.counts.extentAnswers++
      from = await sendExtents(res, extents, start, end, spans, this.pool, signal)
      this.counts.blobBytes += from - start
      if (from > end) {
        res.end()
        return
      }
      // a pack was compacted away under it: the rest goes the ordinary way, and the extents are learnt again
      this.counts.extentMisses++
      this.extents.delete(key)
      this.components.logger.info({ cid: key, at: from }, 'blob extents no longer in the store (a pack compacted away); sending the rest block by block')
    }
    const check = range == null && !matched ? digest : undefined
    await sendStream(res, this.pieces(file, from, end, check, signal))
    if (check != null) this.matched.set(pair, true)
    // Read whole, every leaf of it has now been verified in the local store.
    if (range == null && spans != null) this.learnExtents(key, file, spans)
  }

  /** Looks up (in the background) where the blob under `key`, just read whole, lies in the local store. */
  private learnExtents (key: string, file: FileNode, spans: SpanStore): void {
    if (this.extents.has(key) || this.finding.has(key)) return
    this.finding.add(key)
    const signal = AbortSignal.timeout(this.options.learnTimeoutMs)
    extentsOf(file, this.source, spans, { minRunBytes: this.options.minExtentBytes, signal }).then(extents => {
      if (extents != null) this.extents.set(key, extents)
    }, err => {
      this.components.logger.debug({ cid: key, err: (err as Error).message }, 'blob extents not learnt')
    }).finally(() => { this.finding.delete(key) })
  }

  /**
   * [start, end] of the file in pieces of about `batchBytes` (streamFile: leaves read in
   * batches, every one checked against its CID); with `digest`, the whole blob is hashed as it
   * goes and the last piece is held back unless it matches.
   */
  private async * pieces (file: FileNode, start: number, end: number, digest: string | undefined, signal: AbortSignal): AsyncGenerator<Uint8Array> {
    const [alg, hex] = digest?.split(':') ?? []
    const hash = digest != null ? createHash(alg) : undefined
    const { concurrency, batchLeaves, batchBytes, aheadBytes } = this.options
    let held: Uint8Array | undefined
    for await (const piece of streamFile(file, start, end, this.source, { concurrency, batchLeaves, batchBytes, aheadBytes, signal })) {
      hash?.update(piece)
      if (held != null) {
        this.counts.blobBytes += held.length
        yield held
      }
      held = piece
    }
    if (hash != null && hash.digest('hex') !== hex) throw new DistributionError(500, 'DIGEST_INVALID', `blob content does not match ${digest ?? ''}`)
    if (held != null) {
      this.counts.blobBytes += held.length
      yield held
    }
  }
}

function contentTypeOf (desc: Descriptor): string {
  return isManifestOrIndexMediaType(desc.mediaType) ? desc.mediaType : 'application/octet-stream'
}

/** A blob the image names but whose blocks cannot be had now (not local, no peer has them in time). */
function unavailable (code: 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN', digest: string, err: unknown): DistributionError {
  // 404, as Distribution answers a blob it lacks: containerd then asks the next host.
  if (err instanceof BlockNotFoundError || err instanceof PathNotFoundError) return unknown(code, `${digest} is not available on this mirror: ${(err as Error).message}`, { digest })
  return new DistributionError(503, 'UNAVAILABLE', `${digest} cannot be read now: ${(err as Error).message}`, { digest }, { cause: err })
}

/** The Distribution error body. */
export function errorBody (code: string, message: string, detail?: unknown): string {
  return JSON.stringify({ errors: [{ code, message, ...(detail != null ? { detail } : {}) }] })
}

