import type { IncomingMessage, ServerResponse } from 'node:http'
import { CarWriter } from '@ipld/car/writer'
import * as dagPb from '@ipld/dag-pb'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { identity } from 'multiformats/hashes/identity'
import { decodeFileNode, verifyBlock, walkDag, type FileNode } from '../ipfs/index.js'
import type { Logger } from '../logging.js'
import { GatewayRequestError } from './errors.js'
import { matchesEtag, parseRange, sendStream } from './http.js'

const RAW = 'application/vnd.ipld.raw'
const CAR = 'application/vnd.ipld.car'
const CAR_TYPE = `${CAR}; version=1; order=dfs; dups=n`

/** What the gateway reads: the local blockstore only. */
export interface GatewayApiComponents {
  has: (cid: CID) => Promise<boolean>
  get: (cid: CID, signal?: AbortSignal) => Promise<Uint8Array>
  /**
   * Many blocks at once, each checked against its CID, undefined where absent or not checkable
   * there (those are read with `get`), at most about `maxBytes` of them (the pack store has it).
   */
  readMany?: (cids: CID[], signal: AbortSignal, maxBytes: number) => Promise<Array<Uint8Array | undefined>>
  logger: Logger
}

/** Raw leaves read at once in a CAR walk, and their bytes at most; CAR frames gathered into writes of about `writeBytes`. */
export interface GatewayApiOptions {
  batchLeaves: number
  batchBytes: number
  writeBytes: number
}

type Scope = 'block' | 'entity' | 'all'
interface EntityBytes { from: number, to: number | '*' }

/**
 * A trustless gateway (`GET|HEAD /ipfs/<cid>`, raw blocks and CAR streams) over the local
 * blockstore: it serves what this node holds and never fetches for a client, so a request for
 * a block the node lacks is a 404 at once and cannot make the node ask its peers (a gateway
 * client cannot turn the mirror into an amplifier). Every block is checked against its CID
 * before it is sent. Paths below the CID are not served (400).
 */
export class GatewayApi {
  constructor (private readonly components: GatewayApiComponents, private readonly options: GatewayApiOptions) {}

  async handle (req: IncomingMessage, res: ServerResponse, path: string, query: URLSearchParams, signal: AbortSignal): Promise<void> {
    const m = /^\/ipfs\/([^/]+)\/?$/.exec(path)
    if (m == null) throw new GatewayRequestError(400, 'only /ipfs/<cid> is served: no paths below a CID, no /ipns')
    let cid: CID
    try {
      cid = CID.parse(m[1])
    } catch {
      throw new GatewayRequestError(400, `not a CID: ${m[1]}`)
    }
    const format = this.format(req, query, cid)
    if (!await this.has(cid)) throw new GatewayRequestError(404, `block ${cid.toString()} is not on this node`)
    if (format === 'raw') await this.raw(req, res, cid, signal)
    else await this.car(req, res, cid, query, signal)
  }

  /** `format=` first, then `Accept`; an identity CID (the `bafkqaaa` probe) needs neither. */
  private format (req: IncomingMessage, query: URLSearchParams, cid: CID): 'raw' | 'car' {
    const f = query.get('format')
    if (f != null) {
      if (f === 'raw' || f === 'car') return f
      throw new GatewayRequestError(400, `format=${f}: only raw and car are served`)
    }
    for (const part of (req.headers.accept ?? '').split(',')) {
      const [type, ...params] = part.split(';').map(s => s.trim().toLowerCase())
      if (type === RAW) return 'raw'
      if (type === CAR) {
        const version = params.find(p => p.startsWith('version='))
        if (version != null && version !== 'version=1') continue
        return 'car'
      }
    }
    if (cid.multihash.code === identity.code) return 'raw'
    throw new GatewayRequestError(400, `a trustless gateway: ask for ${RAW} or ${CAR} (Accept, or ?format=raw|car)`)
  }

  private async has (cid: CID): Promise<boolean> {
    return cid.multihash.code === identity.code || await this.components.has(cid)
  }

  /** The block, checked against its CID. */
  private async block (cid: CID, signal?: AbortSignal): Promise<Uint8Array> {
    const bytes = cid.multihash.code === identity.code ? cid.multihash.digest : await this.components.get(cid, signal)
    verifyBlock(cid, bytes)
    return bytes
  }

  private async raw (req: IncomingMessage, res: ServerResponse, cid: CID, signal: AbortSignal): Promise<void> {
    const etag = `"${cid.toString()}.raw"`
    const bytes = await this.block(cid, signal)
    const headers = {
      ...common(cid, etag, 'bin'),
      'Content-Type': RAW,
      'Accept-Ranges': 'bytes'
    }
    if (matchesEtag(req.headers['if-none-match'], etag)) { res.writeHead(304, headers); res.end(); return }
    const range = parseRange(req.headers.range, bytes.length)
    if (range === 'unsatisfiable') {
      res.writeHead(416, { ...headers, 'Content-Range': `bytes */${bytes.length}`, 'Content-Type': 'text/plain; charset=utf-8' })
      res.end('requested range not satisfiable\n')
      return
    }
    const body = range != null ? bytes.subarray(range.start, range.end + 1) : bytes
    res.writeHead(range != null ? 206 : 200, {
      ...headers,
      'Content-Length': String(body.length),
      ...(range != null ? { 'Content-Range': `bytes ${range.start}-${range.end}/${bytes.length}` } : {})
    })
    res.end(req.method === 'HEAD' ? undefined : body)
  }

  private async car (req: IncomingMessage, res: ServerResponse, cid: CID, query: URLSearchParams, signal: AbortSignal): Promise<void> {
    const version = query.get('car-version')
    if (version != null && version !== '1') throw new GatewayRequestError(400, `car-version=${version}: only CARv1 is served`)
    const bytesParam = query.get('entity-bytes')
    const entityBytes = bytesParam != null ? parseEntityBytes(bytesParam) : undefined
    const scopeParam = query.get('dag-scope') ?? (entityBytes != null ? 'entity' : 'all')
    if (scopeParam !== 'block' && scopeParam !== 'entity' && scopeParam !== 'all') throw new GatewayRequestError(400, `dag-scope=${scopeParam}: block, entity or all`)
    // entity-bytes implies (and only applies to) the entity scope
    const scope: Scope = entityBytes != null ? 'entity' : scopeParam
    const etag = `"${cid.toString()}.car.dfs.n.${scope}${bytesParam != null ? `.${bytesParam}` : ''}"`
    const headers = { ...common(cid, etag, 'car'), 'Content-Type': CAR_TYPE }
    if (matchesEtag(req.headers['if-none-match'], etag)) { res.writeHead(304, headers); res.end(); return }
    const root = await this.block(cid, signal)
    res.writeHead(200, headers)
    if (req.method === 'HEAD') { res.end(); return }
    try {
      // With backpressure; a client that goes away ends the walk (the pipeline stops pulling).
      await sendStream(res, this.frames(cid, root, scope, entityBytes, signal))
    } catch (err) {
      // Committed to 200: a block missing or bad mid-stream ends the answer without the CAR's
      // end, so the client sees a truncated transfer, never a complete-looking partial DAG.
      this.components.logger.debug({ cid: cid.toString(), err: (err as Error).message }, 'CAR answer cut short')
      res.destroy(err as Error)
    }
  }

  /**
   * The CARv1 bytes: the header, then each block as varint(length) + CID + bytes, gathered into
   * writes of about `writeBytes` (a layer is thousands of small blocks: a write or a stream
   * chunk per block costs more than the block).
   */
  private async * frames (cid: CID, root: Uint8Array, scope: Scope, entityBytes: EntityBytes | undefined, signal: AbortSignal): AsyncGenerator<Uint8Array> {
    let parts: Uint8Array[] = [await carHeader(cid)]
    let n = parts[0].length
    for await (const b of this.blocks(cid, root, scope, entityBytes, signal)) {
      const len = varint(b.cid.bytes.length + b.bytes.length)
      parts.push(len, b.cid.bytes, b.bytes)
      n += len.length + b.cid.bytes.length + b.bytes.length
      if (n >= this.options.writeBytes) {
        yield Buffer.concat(parts, n)
        parts = []
        n = 0
      }
    }
    if (n > 0) yield Buffer.concat(parts, n)
  }

  /** The blocks of the answer, root first, depth first, each once. */
  private async * blocks (cid: CID, rootBytes: Uint8Array, scope: Scope, entityBytes: EntityBytes | undefined, signal: AbortSignal): AsyncGenerator<{ cid: CID, bytes: Uint8Array }> {
    yield { cid, bytes: rootBytes }
    if (scope === 'block' || (cid.code !== dagPb.code)) return // raw (and codecs we do not walk): the block is the entity
    const file = fileNode(cid, rootBytes)
    if (scope === 'entity' && file == null) return // a directory or other dag-pb: its block lists it
    if (scope === 'entity' && entityBytes != null && file != null) {
      const range = resolveEntityBytes(entityBytes, file.size)
      if (range == null) return // empty or outside the file: as dag-scope=block
      yield * this.rangeBlocks(file, 0, range.from, range.to, new Set([cid.toString()]), this.leafBatches(signal), signal)
      return
    }
    const leaves = this.leafBatches(signal)
    const get = async (c: CID): Promise<Uint8Array> => {
      const bytes = c.equals(cid) ? rootBytes : await leaves.get(c)
      if (c.code === dagPb.code) {
        const links = dagPb.decode(bytes).Links
        leaves.expect(links.map(l => l.Hash), links.map(l => l.Tsize ?? 0))
      }
      return bytes
    }
    for await (const b of walkDag(cid, get, { signal })) {
      if (b.cid.equals(cid) || b.bytes == null) continue
      yield { cid: b.cid, bytes: b.bytes }
    }
  }

  /** The blocks under `node` (starting at file offset `base`) that hold bytes of [from, to]. */
  private async * rangeBlocks (node: FileNode, base: number, from: number, to: number, seen: Set<string>, leaves: LeafBatches, signal: AbortSignal): AsyncGenerator<{ cid: CID, bytes: Uint8Array }> {
    // the children that hold bytes of the range, then each in turn (raw ones read in batches)
    const inRange: Array<{ child: CID, start: number, size: number }> = []
    let pos = base + node.data.length
    for (let i = 0; i < node.children.length && pos <= to; i++) {
      const start = pos
      pos += node.sizes[i]
      if (pos - 1 < from || node.sizes[i] === 0) continue
      inRange.push({ child: node.children[i], start, size: node.sizes[i] })
    }
    const links = inRange.map(c => c.child)
    const sizes = inRange.map(c => c.size)
    // a node's children are all leaves or all nodes in a balanced DAG: only a mixed one needs its
    // links announced again after a subtree (re-announcing every time is quadratic in the links)
    const lastLeaf = links.findLastIndex(c => c.code === raw.code)
    leaves.expect(links, sizes)
    for (const [i, { child, start }] of inRange.entries()) {
      const bytes = await leaves.get(child)
      if (!seen.has(child.toString())) {
        seen.add(child.toString())
        yield { cid: child, bytes }
      }
      if (child.code !== raw.code) {
        yield * this.rangeBlocks(decodeFileNode(child, bytes), start, from, to, seen, leaves, signal)
        if (i < lastLeaf) leaves.expect(links, sizes) // back under this node: leaves of its come next
      }
    }
  }

  private leafBatches (signal: AbortSignal): LeafBatches {
    return new LeafBatches({ readMany: this.components.readMany, block: async (c, s) => await this.block(c, s) }, this.options, signal)
  }
}

/** The UnixFS file a dag-pb block is the root of, or undefined (a directory, not UnixFS). */
function fileNode (cid: CID, bytes: Uint8Array): FileNode | undefined {
  try {
    return decodeFileNode(cid, bytes)
  } catch {
    return undefined
  }
}

function parseEntityBytes (value: string): EntityBytes {
  const m = /^(-?\d+):(-?\d+|\*)$/.exec(value)
  if (m == null) throw new GatewayRequestError(400, `entity-bytes=${value}: want FROM:TO (integers, TO may be *)`)
  const from = Number(m[1])
  const to = m[2] === '*' ? '*' : Number(m[2])
  if (!Number.isSafeInteger(from) || (to !== '*' && !Number.isSafeInteger(to))) throw new GatewayRequestError(400, `entity-bytes=${value}: out of range`)
  return { from, to }
}

/** The inclusive byte range `entity-bytes` names in a file of `size`, or undefined when it is empty. */
export function resolveEntityBytes (e: EntityBytes, size: number): { from: number, to: number } | undefined {
  const from = e.from < 0 ? Math.max(0, size + e.from) : e.from
  const to = e.to === '*' ? size - 1 : (e.to < 0 ? size + e.to : Math.min(e.to, size - 1))
  if (from > to || from >= size || to < 0) return undefined
  return { from, to }
}

function common (cid: CID, etag: string, ext: string): Record<string, string> {
  return {
    ETag: etag,
    'Cache-Control': 'public, max-age=29030400, immutable',
    'Content-Disposition': `attachment; filename="${cid.toString()}.${ext}"`,
    'X-Content-Type-Options': 'nosniff',
    'X-Ipfs-Roots': cid.toString(),
    Vary: 'Accept'
  }
}

/**
 * Raw leaves of a CAR walk read in batches: a node's links are announced (`expect`) when it is
 * decoded; asked for a raw leaf it does not hold, it reads that leaf and the raw links after it
 * (up to `batchLeaves` and about `batchBytes`) with one `readMany`, each checked against its
 * CID, and keeps only that batch. Anything else (dag-pb nodes, identity CIDs, leaves the batch
 * read did not return) is read one by one and checked.
 */
class LeafBatches {
  private links: CID[] = []
  private sizes: number[] = []
  private index = new Map<string, number>()
  private ready = new Map<string, Uint8Array>()

  constructor (
    private readonly source: { readMany?: GatewayApiComponents['readMany'], block: (cid: CID, signal: AbortSignal) => Promise<Uint8Array> },
    private readonly options: Pick<GatewayApiOptions, 'batchLeaves' | 'batchBytes'>,
    private readonly signal: AbortSignal
  ) {}

  /**
   * The links the walk visits next, in order (the children of the node just decoded), and the
   * sizes their parent gives them (a batch stops at `batchBytes` of those; `readMany` enforces it).
   */
  expect (links: CID[], sizes: number[]): void {
    this.links = links
    this.sizes = sizes
    this.index = new Map(links.map((l, i) => [l.toString(), i]))
  }

  async get (cid: CID): Promise<Uint8Array> {
    const key = cid.toString()
    const { readMany, block } = this.source
    const { batchLeaves, batchBytes } = this.options
    let bytes = this.ready.get(key)
    if (bytes == null && readMany != null && cid.code === raw.code && this.index.has(key)) {
      const at = this.index.get(key) as number
      const run: CID[] = []
      let runBytes = 0
      for (let i = at; i < this.links.length && run.length < batchLeaves && this.links[i].code === raw.code && (run.length === 0 || runBytes + this.sizes[i] <= batchBytes); i++) {
        run.push(this.links[i])
        runBytes += this.sizes[i]
      }
      const got = await readMany(run, this.signal, batchBytes)
      this.ready = new Map()
      for (const [i, c] of run.entries()) {
        const b = got[i]
        if (b != null) this.ready.set(c.toString(), b)
      }
      bytes = this.ready.get(key)
    }
    if (bytes != null) {
      this.ready.delete(key)
      return bytes
    }
    return await block(cid, this.signal)
  }
}

/** The CARv1 header (varint length + dag-cbor `{ roots, version: 1 }`), as @ipld/car writes it. */
async function carHeader (root: CID): Promise<Uint8Array> {
  const { writer, out } = CarWriter.create([root])
  const parts: Uint8Array[] = []
  const reading = (async () => { for await (const p of out) parts.push(p) })()
  await writer.close()
  await reading
  return Buffer.concat(parts)
}

/** Unsigned LEB128, as CAR frames their blocks. */
function varint (n: number): Uint8Array {
  const out: number[] = []
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80)
    n = Math.floor(n / 0x80)
  }
  out.push(n)
  return Uint8Array.from(out)
}
