import * as dagPb from '@ipld/dag-pb'
import type { GraphNode, GraphWalkerFactory } from '@helia/interface'
import type { Helia } from 'helia'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { checkAbort, collectBlock } from './dag-reader.js'
import { PinNotFoundError } from './errors.js'
import { blockKey } from './gc.js'
import { pinWalker, type LocalBlocks } from './walk.js'

/** A pin as `pin ls` shows it. */
export interface PinInfo {
  cid: string
  /** Always `recursive` for ours (Helia's depth Infinity); a depth for pins made by others. */
  type: 'recursive' | 'direct' | `depth ${number}`
  /**
   * `lazy`: made by a lazy pull or mount, it keeps the blocks of the image that are stored here
   * (the rest is fetched when read); `complete`: every block was stored when it was pinned.
   */
  mode: 'complete' | 'lazy'
  metadata: Record<string, string | number | boolean>
}

export interface PinComponents {
  pins: Helia['pins']
  localBlockstore: LocalBlocks
}

/**
 * A walker over the blocks under a root that are stored here, skipping absent ones and what is
 * below them (a lazy image holds only what was read). With `only`, it yields only the blocks it
 * accepts (unpinning skips blocks that have no pin record: they were fetched after the pin).
 */
export function localWalker (store: LocalBlocks, only?: (cid: CID) => Promise<boolean>): GraphWalkerFactory {
  return () => ({
    async * walk (root: CID, options: { signal?: AbortSignal, depth?: number } = {}): AsyncGenerator<GraphNode<any>> {
      const maxDepth = options.depth ?? Infinity
      const seen = new Set<string>()
      const stack: Array<{ cid: CID, depth: number }> = [{ cid: root, depth: 0 }]
      while (stack.length > 0) {
        checkAbort(options.signal)
        const { cid, depth } = stack.pop() as { cid: CID, depth: number }
        const key = blockKey(cid)
        if (seen.has(key)) continue
        seen.add(key)
        let bytes: Uint8Array | undefined
        if (cid.code === raw.code) {
          if (!await store.has(cid)) continue
        } else {
          try {
            bytes = await collectBlock(store.get(cid, { signal: options.signal }))
          } catch (err) {
            if ((err as Error).name === 'NotFoundError') continue
            throw err
          }
        }
        if (only == null || await only(cid)) yield { block: { cid, bytes } as unknown as GraphNode<any>['block'], depth, path: [cid] }
        if (bytes != null && cid.code === dagPb.code && depth < maxDepth) {
          const links = dagPb.decode(bytes).Links
          for (let i = links.length - 1; i >= 0; i--) stack.push({ cid: links[i].Hash, depth: depth + 1 })
        }
      }
    }
  })
}

/** The pin of `cid`, if any. */
export async function getPin (components: PinComponents, cid: CID): Promise<PinInfo | undefined> {
  let pin: { depth: number, metadata: Record<string, string | number | boolean> }
  try {
    pin = await components.pins.get(cid)
  } catch (err) {
    if ((err as Error).name === 'NotFoundError') return undefined
    throw err
  }
  return describe(cid, pin)
}

function describe (cid: CID, pin: { depth: number, metadata: Record<string, string | number | boolean> }): PinInfo {
  const type = pin.depth === Infinity ? 'recursive' : pin.depth === 0 ? 'direct' : `depth ${pin.depth}` as const
  return { cid: cid.toString(), type, mode: pin.metadata?.lazy === true ? 'lazy' : 'complete', metadata: pin.metadata ?? {} }
}

export async function * listPins (components: PinComponents, options: { signal?: AbortSignal } = {}): AsyncGenerator<PinInfo> {
  for await (const pin of components.pins.ls({ signal: options.signal })) yield describe(pin.cid, pin)
}

/**
 * Pins `root` recursively. `lazy`: keeps what of it is stored here now and later (a lazy pull or
 * mount); otherwise every block must be stored here (BlockNotFoundError names the first that is
 * not). A pin that exists already is kept, except that a complete pin replaces a lazy one.
 * Returns whether a pin was added.
 */
export async function pinRoot (components: PinComponents, root: CID, options: { lazy?: boolean, metadata?: Record<string, string | number | boolean>, signal?: AbortSignal } = {}): Promise<boolean> {
  const existing = await getPin(components, root)
  if (existing != null && (options.lazy === true || existing.mode === 'complete')) return false
  const walker = options.lazy === true ? localWalker(components.localBlockstore) : pinWalker(components.localBlockstore)
  if (existing != null) {
    // the lazy pin stays unless the complete one can be made: every block must be here first
    for await (const _ of walker({} as Parameters<typeof walker>[0]).walk(root, { signal: options.signal })) { /* check */ }
    await unpinRoot(components, root, options)
  }
  const metadata = { ...options.metadata, ...(options.lazy === true ? { lazy: true } : {}) }
  // offline: a pin never asks peers (a complete pin's blocks are all here, a lazy one takes what is)
  for await (const _ of components.pins.add(root, { signal: options.signal, offline: true, walker, metadata } as Parameters<Helia['pins']['add']>[1])) { /* walk */ }
  return true
}

/** Removes the pin of `root` (PinNotFoundError when there is none). Its blocks go at the next collection. */
export async function unpinRoot (components: PinComponents, root: CID, options: { signal?: AbortSignal } = {}): Promise<void> {
  if (await getPin(components, root) == null) throw new PinNotFoundError(root.toString())
  // only the blocks that carry a pin record: a lazy pin's later blocks have none, and blocks
  // collected since are not there to walk
  const walker = localWalker(components.localBlockstore, async (cid) => await components.pins.isPinned(cid))
  for await (const _ of components.pins.rm(root, { signal: options.signal, walker } as Parameters<Helia['pins']['rm']>[1])) { /* walk */ }
}

export { CID }
