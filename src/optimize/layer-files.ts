import { cleanEntryName, readTarStream, type EntryType } from '../estargz/index.js'
import type { Descriptor, ImageReader } from '../oci/index.js'
import { openSourceLayer } from '../convert/index.js'

/** One entry of a layer's tar: its clean name and type. */
export interface LayerEntry {
  name: string
  type: EntryType
}

/** Where a path of the merged image comes from. */
export interface VisibleFile {
  layerIndex: number
  type: EntryType
}

const WHITEOUT = '.wh.'
const OPAQUE = '.wh..wh..opq'

/**
 * The entries of a source layer, in tar order, read once and verified (digest, size, diffID)
 * before they are returned.
 */
export async function listLayerEntries (source: ImageReader, desc: Descriptor, diffID: string | undefined, signal?: AbortSignal): Promise<LayerEntry[]> {
  const layer = await openSourceLayer(source, desc, { diffID, signal })
  const out: LayerEntry[] = []
  try {
    for await (const e of readTarStream(layer.tar)) {
      signal?.throwIfAborted()
      const name = cleanEntryName(e.header.name)
      if (name !== '') out.push({ name, type: e.header.type })
    }
  } catch (err) {
    throw await layer.fail(err)
  }
  await layer.finish()
  return out
}

function parentOf (name: string): string {
  const i = name.lastIndexOf('/')
  return i < 0 ? '' : name.slice(0, i)
}

/** `a/b/c` → `a/b`, `a`, `` (every proper ancestor, nearest first). */
function * ancestors (name: string): Generator<string> {
  for (let p = parentOf(name); ; p = parentOf(p)) {
    yield p
    if (p === '') return
  }
}

/**
 * What a container sees of the layers (bottom first): every path with the topmost layer holding
 * it, as overlayfs merges them. A `.wh.NAME` hides NAME (and what is under it) in the layers
 * below, `.wh..wh..opq` hides everything below in its directory, and a non-directory hides
 * whatever lower layers have under its path.
 */
export function mergedView (layers: ReadonlyArray<readonly LayerEntry[]>): Map<string, VisibleFile> {
  const view = new Map<string, VisibleFile>()
  /** Paths whose lower-layer contents are hidden (whiteouts, non-directories). */
  const hidden = new Set<string>()
  /** Directories whose lower-layer contents are hidden (opaque). */
  const opaque = new Set<string>()
  const isHidden = (name: string): boolean => {
    if (hidden.has(name)) return true
    for (const a of ancestors(name)) if (hidden.has(a) || opaque.has(a)) return true
    return false
  }
  for (let i = layers.length - 1; i >= 0; i--) {
    const newHidden: string[] = []
    const newOpaque: string[] = []
    for (const e of layers[i]) {
      const base = e.name.slice(e.name.lastIndexOf('/') + 1)
      const dir = parentOf(e.name)
      if (base === OPAQUE) {
        newOpaque.push(dir)
        continue
      }
      if (base.startsWith(WHITEOUT)) {
        newHidden.push(dir === '' ? base.slice(WHITEOUT.length) : `${dir}/${base.slice(WHITEOUT.length)}`)
        continue
      }
      const prev = view.get(e.name)
      // A later entry of the same name in one layer replaces the earlier one, as tar -x does.
      if (prev != null ? prev.layerIndex !== i : isHidden(e.name)) continue
      view.set(e.name, { layerIndex: i, type: e.type })
      if (e.type !== 'dir') newHidden.push(e.name)
    }
    // A layer's own whiteouts hide only what is below it.
    for (const h of newHidden) hidden.add(h)
    for (const o of newOpaque) opaque.add(o)
  }
  return view
}
