import type { ChunkCache } from './cache.js'
import type { LayerFs } from './layer.js'

/** What a chunk-cache collection removed (or, dry, would) and kept. */
export interface ChunkSweep {
  entries: number
  bytes: number
  keptEntries: number
  keptBytes: number
}

/**
 * Removes the cached chunks that none of `layers` (the layers mounted now) names in its TOC.
 * What goes is derived data: a layer mounted again reads those chunks from its blocks.
 */
export async function sweepUnreferencedChunks (cache: ChunkCache, layers: Iterable<LayerFs>, options: { dryRun?: boolean } = {}): Promise<ChunkSweep> {
  const referenced = new Set<string>()
  for (const fs of layers) {
    for (const node of new Set(fs.estargz.tree.byName.values())) {
      for (const c of node.chunks) referenced.add(c.digest.slice(c.digest.indexOf(':') + 1))
    }
  }
  let keptEntries = 0
  let keptBytes = 0
  for (const [hex, size] of cache.entries()) {
    if (!referenced.has(hex)) continue
    keptEntries++
    keptBytes += size
  }
  const swept = await cache.sweep(hex => referenced.has(hex), options)
  return { ...swept, keptEntries, keptBytes }
}
