import { NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK } from './constants.js'
import { MalformedTocError, UnsafePathError } from './errors.js'
import { baseName, cleanEntryName, climbsOutOfRoot, parentName } from './paths.js'
import { parseModtime, type Toc, type TocEntry } from './toc.js'

export type NodeType = 'dir' | 'reg' | 'symlink' | 'char' | 'block' | 'fifo'

/** Where one chunk of a file lives in the blob. */
export interface Chunk {
  /** Offset of the chunk in the file. */
  chunkOffset: number
  /** Uncompressed bytes in the chunk. */
  chunkSize: number
  /** Offset of the gzip member that holds it. */
  offset: number
  /** Bytes to skip after decompressing from `offset` (min-chunk-size images). */
  innerOffset: number
  /** End of the compressed range to fetch: the next data member's offset (or the TOC's). */
  compressedEnd: number
  /** Digest the chunk is verified against (`chunkDigest`, or `digest` for legacy stargz). */
  digest: string
}

/**
 * A file, directory or other node of a layer, after name normalisation, implicit directories
 * and hardlink resolution. Hardlinked names share one node object.
 */
export interface LayerNode {
  /** Clean name of the first name this node was seen under (`''` for the root). */
  name: string
  type: NodeType
  /** Permission bits with setuid/setgid/sticky (no file-type bits). */
  mode: number
  uid: number
  gid: number
  userName: string
  groupName: string
  size: number
  /** Seconds since the epoch (0 when the TOC has none). */
  mtime: number
  linkName: string
  devMajor: number
  devMinor: number
  /** Never modified: nodes without extended attributes share one empty map. */
  xattrs: ReadonlyMap<string, Uint8Array>
  /** Whole-file digest, when the TOC has one. */
  digest?: string
  chunks: Chunk[]
  /** Names this node is reachable under (hardlinks); directories count subdirectories + 2. */
  numLink: number
  /** Children by base name (directories only). */
  children?: Map<string, LayerNode>
  /** True for directories the TOC does not list but its paths need. */
  implicit?: boolean
  /** Index of the node's first TOC entry; stable across opens of the same blob. */
  index: number
}

export interface LayerTree {
  root: LayerNode
  /** Every node by every clean name it has (hardlinks included). */
  byName: Map<string, LayerNode>
  /** Compressed offset of `.prefetch.landmark`, when the layer has prioritized files. */
  prefetchOffset?: number
  /** True when the layer says "prefetch nothing" (`.no.prefetch.landmark`). */
  noPrefetch: boolean
}

function fail (message: string): never {
  throw new MalformedTocError(`malformed TOC: ${message}`)
}

/** The xattrs of every node that has none (most): one map, not one per node. */
const NO_XATTRS: ReadonlyMap<string, Uint8Array> = new Map()

function xattrsOf (e: TocEntry): ReadonlyMap<string, Uint8Array> {
  if (e.xattrs == null) return NO_XATTRS
  const keys = Object.keys(e.xattrs)
  if (keys.length === 0) return NO_XATTRS
  const xattrs = e.xattrs
  return new Map(keys.map(k => [k, Uint8Array.from(Buffer.from(xattrs[k], 'base64'))]))
}

/**
 * Every node is made here, with every field in one order (V8 then gives all nodes one shape:
 * the tree's thousands of nodes are built at each layer open and read at each FUSE call).
 */
function newNode (name: string, type: NodeType, index: number): LayerNode {
  return {
    name, type, mode: 0, uid: 0, gid: 0, userName: '', groupName: '', size: 0, mtime: 0, linkName: '', devMajor: 0, devMinor: 0,
    xattrs: NO_XATTRS, digest: undefined, chunks: [], numLink: 1, children: undefined, implicit: undefined, index
  }
}

function newDir (name: string, index: number, implicit: boolean): LayerNode {
  const dir = newNode(name, 'dir', index)
  dir.mode = 0o755
  dir.numLink = 2
  dir.children = new Map()
  dir.implicit = implicit
  return dir
}

/**
 * Builds the layer tree from a TOC and checks that its data entries fit inside the blob:
 * offsets before the TOC, chunks that tile each file exactly, a digest for every chunk.
 */
export function buildTree (toc: Toc, tocOffset: number): LayerTree {
  const root = newDir('', -1, true)
  const byName = new Map<string, LayerNode>([['', root]])
  const tree: LayerTree = { root, byName, noPrefetch: false }
  const hardlinks: Array<{ clean: string, target: string, entry: TocEntry, index: number }> = []
  const dataOffsets: number[] = []
  const users = new Map<number, string>()
  const groups = new Map<number, string>()
  const hasChunkEntries = toc.entries.some(e => e.type === 'chunk')
  // the files of one package share a few timestamps: parse each distinct one once
  const mtimes = new Map<string, number>()
  const mtimeOf = (s: string | undefined): number => {
    if (s == null) return 0
    let t = mtimes.get(s)
    if (t == null) {
      t = parseModtime(s)
      mtimes.set(s, t)
    }
    return t
  }
  let lastReg: { node: LayerNode, entry: TocEntry } | undefined

  const ensureDir = (clean: string, index: number): LayerNode => {
    const existing = byName.get(clean)
    if (existing != null) {
      if (existing.type !== 'dir') fail(`${JSON.stringify(clean)} is used as a directory but is a ${existing.type}`)
      return existing
    }
    const parent = ensureDir(parentName(clean), index)
    const dir = newDir(clean, index, true)
    parent.children?.set(baseName(clean), dir)
    byName.set(clean, dir)
    return dir
  }

  const attach = (clean: string, node: LayerNode, index: number): void => {
    const parent = ensureDir(parentName(clean), index)
    parent.children?.set(baseName(clean), node)
    byName.set(clean, node)
  }

  const addChunk = (node: LayerNode, e: TocEntry, legacyDigest: string | undefined): void => {
    const offset = e.offset ?? 0
    if (offset >= tocOffset) fail(`${JSON.stringify(node.name)}: data offset ${offset} is not before the TOC (${tocOffset})`)
    const digest = e.chunkDigest ?? legacyDigest
    if (digest == null) fail(`${JSON.stringify(node.name)}: chunk at ${e.chunkOffset ?? 0} has no chunkDigest to verify it against`)
    node.chunks.push({ chunkOffset: e.chunkOffset ?? 0, chunkSize: e.chunkSize ?? 0, offset, innerOffset: e.innerOffset ?? 0, compressedEnd: 0, digest })
    dataOffsets.push(offset)
  }

  toc.entries.forEach((e, index) => {
    if (e.type === 'chunk') {
      if (lastReg == null) fail(`chunk entry ${index} (${JSON.stringify(e.name)}) does not follow a regular file`)
      addChunk(lastReg.node, e, undefined)
      return
    }
    lastReg = undefined
    if (climbsOutOfRoot(e.name)) throw new UnsafePathError(e.name)
    const clean = cleanEntryName(e.name)
    if (clean === PREFETCH_LANDMARK) {
      tree.prefetchOffset = e.offset ?? 0
      return
    }
    if (clean === NO_PREFETCH_LANDMARK) {
      tree.noPrefetch = true
      return
    }
    const uid = e.uid ?? 0
    const gid = e.gid ?? 0
    if (e.userName != null && e.userName !== '') users.set(uid, e.userName)
    if (e.groupName != null && e.groupName !== '') groups.set(gid, e.groupName)
    if (e.type === 'hardlink') {
      if (e.linkName == null || e.linkName === '') fail(`hardlink ${JSON.stringify(e.name)} has no target`)
      if (climbsOutOfRoot(e.linkName)) throw new UnsafePathError(e.linkName, `is the target of hardlink ${JSON.stringify(e.name)} and escapes the layer root`)
      if (clean === '') fail('the root cannot be a hardlink')
      hardlinks.push({ clean, target: cleanEntryName(e.linkName), entry: e, index })
      return
    }
    const setAttrs = (node: LayerNode): void => {
      node.mode = (e.mode ?? 0) & 0o7777
      node.uid = uid
      node.gid = gid
      node.userName = users.get(uid) ?? ''
      node.groupName = groups.get(gid) ?? ''
      node.mtime = mtimeOf(e.modtime)
      node.xattrs = xattrsOf(e)
    }
    if (e.type === 'dir') {
      const existing = byName.get(clean)
      const dir = existing?.type === 'dir' ? existing : newDir(clean, index, false)
      setAttrs(dir)
      dir.implicit = false
      dir.index = index
      if (existing !== dir) {
        if (clean === '') fail('the root is not a directory')
        attach(clean, dir, index)
      }
      return
    }
    if (clean === '') fail(`the root entry is a ${e.type}, not a directory`)
    const node = newNode(clean, e.type, index)
    setAttrs(node)
    node.size = e.type === 'reg' ? e.size ?? 0 : e.type === 'symlink' ? Buffer.byteLength(e.linkName ?? '') : 0
    node.linkName = e.type === 'symlink' ? e.linkName ?? '' : ''
    node.devMajor = e.devMajor ?? 0
    node.devMinor = e.devMinor ?? 0
    node.digest = e.digest
    if (e.type === 'symlink' && node.linkName === '') fail(`symlink ${JSON.stringify(e.name)} has no target`)
    attach(clean, node, index)
    if (e.type === 'reg' && node.size > 0) {
      // Legacy stargz (no chunk entries, no chunkDigest) is verified with the whole-file digest.
      addChunk(node, e, hasChunkEntries ? undefined : e.digest)
      lastReg = { node, entry: e }
    }
  })

  const linkByName = new Map(hardlinks.map(h => [h.clean, h]))
  const resolveLink = (clean: string, seen: Set<string>): LayerNode | undefined => {
    const node = byName.get(clean)
    if (node != null) return node
    const link = linkByName.get(clean) // a hardlink to a hardlink listed later in the TOC
    if (link == null || seen.has(clean)) return undefined
    seen.add(clean)
    return resolveLink(link.target, seen)
  }
  for (const h of hardlinks) {
    const target = resolveLink(h.target, new Set([h.clean]))
    if (target == null) fail(`hardlink ${JSON.stringify(h.entry.name)} points to ${JSON.stringify(h.entry.linkName)}, which is not in the layer`)
    if (target.type === 'dir') fail(`hardlink ${JSON.stringify(h.entry.name)} points to a directory`)
    target.numLink++
    attach(h.clean, target, h.index)
  }

  // Chunk sizes and compressed extents. Data offsets are sorted once; a chunk's range ends
  // where the next member holding other data begins (or where the TOC begins).
  const sorted = [...new Set(dataOffsets)].sort((a, b) => a - b)
  const nextOffset = (off: number): number => {
    let lo = 0
    let hi = sorted.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (sorted[mid] <= off) lo = mid + 1
      else hi = mid
    }
    return lo < sorted.length ? sorted[lo] : tocOffset
  }
  const seen = new Set<LayerNode>()
  for (const node of byName.values()) {
    if (node.type !== 'reg' || seen.has(node)) continue
    seen.add(node)
    if (node.size === 0) {
      if (node.chunks.length > 0) fail(`${JSON.stringify(node.name)} is empty but has data`)
      continue
    }
    let expect = 0
    node.chunks.forEach((c, i) => {
      if (c.chunkOffset !== expect) fail(`${JSON.stringify(node.name)}: chunk ${i} starts at ${c.chunkOffset}, expected ${expect}`)
      const next = node.chunks[i + 1]
      const end = next != null ? next.chunkOffset : node.size
      if (c.chunkSize === 0) c.chunkSize = end - c.chunkOffset
      if (c.chunkSize <= 0 || c.chunkOffset + c.chunkSize > node.size) fail(`${JSON.stringify(node.name)}: chunk ${i} (${c.chunkOffset}+${c.chunkSize}) lies outside the file (${node.size} bytes)`)
      if (next != null && c.chunkOffset + c.chunkSize !== next.chunkOffset) fail(`${JSON.stringify(node.name)}: chunk ${i} does not end where chunk ${i + 1} begins`)
      c.compressedEnd = nextOffset(c.offset)
      expect = c.chunkOffset + c.chunkSize
    })
    if (expect !== node.size) fail(`${JSON.stringify(node.name)}: chunks cover ${expect} of ${node.size} bytes`)
  }

  // Directory link counts: 2 plus one per subdirectory (each subdirectory's "..").
  for (const node of new Set(byName.values())) {
    if (node.type !== 'dir' || node.children == null) continue
    let subdirs = 0
    for (const child of node.children.values()) if (child.type === 'dir') subdirs++
    node.numLink = 2 + subdirs
  }
  return tree
}
