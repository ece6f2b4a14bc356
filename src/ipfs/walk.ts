import * as dagPb from '@ipld/dag-pb'
import type { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { checkAbort, type BlockGetter } from './dag-reader.js'
import { UnexpectedDagError } from './errors.js'

/** The links of a block (dag-pb links; raw blocks have none). */
function blockLinks (cid: CID, bytes: Uint8Array): CID[] {
  if (cid.code === raw.code) return []
  if (cid.code === dagPb.code) return dagPb.decode(bytes).Links.map(l => l.Hash)
  throw new UnexpectedDagError(`${cid.toString()}: codec 0x${cid.code.toString(16)} is not supported (only dag-pb and raw)`)
}

export interface WalkOptions {
  signal?: AbortSignal
  /**
   * When given, raw leaves are only checked with `has` (and yielded without bytes) instead of
   * being read: a completeness check need not read every leaf. A leaf that is absent throws
   * through `missing`.
   */
  has?: (cid: CID) => Promise<boolean>
  missing?: (cid: CID) => Error
  /**
   * CIDs (as strings) already walked, shared by several walks: a block already in it is not
   * yielded again, nor walked under (several images in one bundle share their base layers).
   */
  seen?: Set<string>
}

export interface WalkedBlock {
  cid: CID
  /** Absent for raw leaves when `has` is used. */
  bytes?: Uint8Array
}

/**
 * Every block of a DAG once, depth-first in link order (the order `ipfs dag export` writes),
 * root first.
 */
export async function * walkDag (root: CID, getBlock: BlockGetter, options: WalkOptions = {}): AsyncGenerator<WalkedBlock> {
  const seen = options.seen ?? new Set<string>()
  const stack: CID[] = [root]
  while (stack.length > 0) {
    checkAbort(options.signal)
    const cid = stack.pop() as CID
    const key = cid.toString()
    if (seen.has(key)) continue
    seen.add(key)
    if (cid.code === raw.code && options.has != null) {
      if (!await options.has(cid)) throw options.missing?.(cid) ?? new UnexpectedDagError(`block ${key} is missing`)
      yield { cid }
      continue
    }
    const bytes = await getBlock(cid, options.signal)
    const links = blockLinks(cid, bytes)
    yield { cid, bytes }
    for (let i = links.length - 1; i >= 0; i--) stack.push(links[i])
  }
}
