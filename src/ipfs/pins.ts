import * as dagPb from '@ipld/dag-pb'
import type { GraphNode, GraphWalkerFactory } from '@helia/interface'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { checkAbort, collectBlock } from './dag-reader.js'
import { PinNotFoundError } from './errors.js'
import { blockKey } from './gc.js'
import { pinWalker, type LocalBlocks } from './walk.js'

/** A pin as `pin ls` shows it. */
export interface PinInfo {
  cid: string
  /** Always `recursive` for ours (depth Infinity); a depth for pins made by others. */
  type: 'recursive' | 'direct' | `depth ${number}`
  /**
   * `lazy`: made by a lazy pull or mount, it keeps the blocks of the image that are stored here
   * (the rest is fetched when read); `complete`: every block was stored when it was pinned.
   */
  mode: 'complete' | 'lazy'
  metadata: Record<string, string | number | boolean>
}

/** A pin as it is stored: its root, how deep it keeps the DAG (Infinity: all of it), and its metadata. */
export interface PinRecord {
  cid: CID
  depth: number
  metadata: Record<string, string | number | boolean>
}

/**
 * Where pins are kept: one record per root (the repo's index). Garbage collection marks from
 * these roots; nothing is recorded per block.
 */
export interface PinStore {
  get: (cid: CID) => Promise<PinRecord | undefined>
  /** Adds or replaces the pin of `pin.cid`. */
  put: (pin: PinRecord) => Promise<void>
  /** Removes the pin of `cid`; false when there was none. */
  delete: (cid: CID, options?: { signal?: AbortSignal }) => Promise<boolean>
  ls: (options?: { signal?: AbortSignal }) => AsyncIterable<PinRecord>
}

export interface PinComponents {
  pins: PinStore
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
  const pin = await components.pins.get(cid)
  return pin == null ? undefined : describe(pin)
}

function describe (pin: PinRecord): PinInfo {
  const type = pin.depth === Infinity ? 'recursive' : pin.depth === 0 ? 'direct' : `depth ${pin.depth}` as const
  return { cid: pin.cid.toString(), type, mode: pin.metadata?.lazy === true ? 'lazy' : 'complete', metadata: pin.metadata ?? {} }
}

export async function * listPins (components: PinComponents, options: { signal?: AbortSignal } = {}): AsyncGenerator<PinInfo> {
  for await (const pin of components.pins.ls({ signal: options.signal })) yield describe(pin)
}

/**
 * Pins `root` recursively. `lazy`: keeps what of it is stored here now and later (a lazy pull or
 * mount); otherwise every block must be stored here (BlockNotFoundError names the first that is
 * not) — `checked`: the caller has just walked the DAG and found every block. A pin that exists
 * already is kept, except that a complete pin replaces a lazy one. Returns whether a pin was added.
 */
export async function pinRoot (components: PinComponents, root: CID, options: { lazy?: boolean, checked?: boolean, metadata?: Record<string, string | number | boolean>, signal?: AbortSignal } = {}): Promise<boolean> {
  const existing = await getPin(components, root)
  if (existing != null && (options.lazy === true || existing.mode === 'complete')) return false
  if (options.lazy !== true && options.checked !== true) {
    // every block must be here (pinWalker throws BlockNotFoundError on the first that is not)
    for await (const _ of pinWalker(components.localBlockstore)({} as Parameters<ReturnType<typeof pinWalker>>[0]).walk(root, { signal: options.signal })) { /* check */ }
  }
  // a lazy pin replaced by a complete one: the old one goes first (an older version's pin keeps records per block)
  if (existing != null) await components.pins.delete(root, { signal: options.signal })
  await components.pins.put({ cid: root, depth: Infinity, metadata: { ...options.metadata, ...(options.lazy === true ? { lazy: true } : {}) } })
  return true
}

/** Removes the pin of `root` (PinNotFoundError when there is none). Its blocks go at the next collection. */
export async function unpinRoot (components: PinComponents, root: CID, options: { signal?: AbortSignal } = {}): Promise<void> {
  if (!await components.pins.delete(root, { signal: options.signal })) throw new PinNotFoundError(root.toString())
}

export { CID }
