/**
 * Every label we read or write on containerd's content and snapshots, in one table: those
 * containerd's pull sets, those the remote (lazy) snapshot protocol reads on Prepare (the keys
 * stargz-snapshotter reads, so a puller written for it works with us), and our own. The pull,
 * the snapshotter, the layer mounters and their tests all spell them from here.
 */
import { createHash } from 'node:crypto'
import { CID } from 'multiformats/cid'
import { isConfigMediaType, isLayerMediaType, isManifestMediaType } from '../oci/media-types.js'
import type { Labels } from './messages.js'

export const LABELS = {
  /** content: GC reference to a child blob (prefix; containerd's images.ChildGCLabels) */
  gcRefContent: 'containerd.io/gc.ref.content.',
  /** content (config): GC reference to the unpacked top snapshot, suffixed with the snapshotter name */
  gcRefSnapshot: 'containerd.io/gc.ref.snapshot.',
  /** content/leases: never collected */
  gcRoot: 'containerd.io/gc.root',
  /** layer content: its diffID, set once an apply verified it */
  uncompressed: 'containerd.io/uncompressed',
  /** Prepare: the chainID to commit the prepared layer as (containerd's unpacker sets it) */
  snapshotRef: 'containerd.io/snapshot.ref',
  /** descriptor annotations with this prefix are copied onto snapshots (snapshots.FilterInheritedLabels) */
  inheritedPrefix: 'containerd.io/snapshot/',
  /** marks a committed snapshot whose `fs` is a lazy mount (value {@link REMOTE_LABEL_VALUE}) */
  remote: 'containerd.io/snapshot/remote',
  /** comma list of the layer descriptor's urls (`ipfs://<cid>`); `.<i>` suffixed: one url each */
  remoteUrls: 'containerd.io/snapshot/remote/urls',
  /** TOC digest of the eStargz layer */
  tocDigest: 'containerd.io/snapshot/stargz/toc.digest',
  criImageRef: 'containerd.io/snapshot/cri.image-ref',
  /** compressed layer digest, sent by plain CRI */
  criLayerDigest: 'containerd.io/snapshot/cri.layer-digest',
  criManifestDigest: 'containerd.io/snapshot/cri.manifest-digest',
  criImageLayers: 'containerd.io/snapshot/cri.image-layers',
  stargzReference: 'containerd.io/snapshot/remote/stargz.reference',
  /** layer digest, sent by ctr-remote / nerdctl style handlers */
  stargzDigest: 'containerd.io/snapshot/remote/stargz.digest',
  stargzLayers: 'containerd.io/snapshot/remote/stargz.layers',
  /**
   * ours, inherited: the layer descriptor's CID annotation (oci's IPFS_CID_ANNOTATION, which a
   * registry copy carries instead of `ipfs://` urls); containerd copies it onto the Prepare
   */
  annotatedCid: 'containerd.io/snapshot/ipfs-estargz/cid',
  /**
   * ours, inherited: the CID of the layer's TOC member leaf and the member's offset (oci's
   * TOC_CID_ANNOTATION and TOC_OFFSET_ANNOTATION): a mount fetches the TOC without the footer
   */
  tocCid: 'containerd.io/snapshot/ipfs-estargz/toc.cid',
  tocOffset: 'containerd.io/snapshot/ipfs-estargz/toc.offset',
  /** ours: the CID the layer was mounted from, so a restart does not depend on the digest index */
  cid: 'ipfs-estargz/layer.cid',
  /**
   * ours: on the active snapshot a Prepare with a target ref returns instead of a remote one,
   * why it is not lazy (`<reason>: <message>`), for the puller to read with Stat
   */
  fallbackReason: 'ipfs-estargz/fallback-reason'
} as const

/** Value of {@link LABELS.remote} (the one stargz-snapshotter writes). */
export const REMOTE_LABEL_VALUE = 'remote snapshot'

/** Longest message (bytes) kept in {@link LABELS.fallbackReason} (containerd's label limit is 4096 bytes with the key). */
export const MAX_FALLBACK_MESSAGE = 1024

/** containerd refuses a label whose key + value exceed this many bytes (labels.Validate). */
export const MAX_LABEL_SIZE = 4096

/** The GC label key prefix a parent uses for a child of this media type (containerd's images.ChildGCLabels). */
export function childGcLabelPrefix (mediaType: string): string {
  if (isConfigMediaType(mediaType)) return `${LABELS.gcRefContent}config`
  if (isManifestMediaType(mediaType)) return `${LABELS.gcRefContent}m.`
  if (isLayerMediaType(mediaType)) return `${LABELS.gcRefContent}l.`
  return LABELS.gcRefContent
}

/**
 * The GC labels a parent blob gets for its children, numbered exactly as containerd's
 * SetChildrenMappedLabels does: a prefix ending in `.` always gets an index, others only from
 * their second use.
 */
export function childGcLabels (children: Array<{ mediaType: string, digest: string }>): Labels {
  const out: Labels = {}
  const seen = new Map<string, number>()
  for (const ch of children) {
    let key = childGcLabelPrefix(ch.mediaType)
    const idx = seen.get(key) ?? 0
    seen.set(key, idx + 1)
    if (idx > 0 || key.endsWith('.')) key = `${key}${idx}`
    out[key] = ch.digest
  }
  return out
}

/** Annotations a layer descriptor passes on to its snapshot (containerd's snapshots.FilterInheritedLabels). */
export function inheritedLabels (annotations: Record<string, string> | undefined): Labels {
  const out: Labels = {}
  for (const [k, v] of Object.entries(annotations ?? {})) {
    if (k === LABELS.snapshotRef || k.startsWith(LABELS.inheritedPrefix)) out[k] = v
  }
  return out
}

/**
 * Comma list of `items`, cut before the item that would push `key` + value over the label size
 * limit (stargz-snapshotter does the same: skipping layers only costs prefetch).
 */
export function commaListWithinLimit (key: string, items: string[], limit = MAX_LABEL_SIZE): string {
  let value = ''
  for (const item of items) {
    const next = value === '' ? item : `${value},${item}`
    if (Buffer.byteLength(key) + Buffer.byteLength(next) > limit) break
    value = next
  }
  return value
}

/** OCI chainIDs of a layer stack: chainID(0) = diffID(0), chainID(n) = sha256(chainID(n-1) + " " + diffID(n)). */
export function chainIds (diffIds: string[]): string[] {
  const out: string[] = []
  for (const d of diffIds) {
    const prev = out[out.length - 1]
    out.push(prev == null ? d : `sha256:${createHash('sha256').update(`${prev} ${d}`).digest('hex')}`)
  }
  return out
}

/**
 * Where a layer's TOC member is, from the layer's annotations (or the Prepare labels containerd
 * copies them to): the CID of its own leaf block and its offset in the blob.
 */
export interface TocHint {
  cid: string
  offset: number
}

/** The TOC hint of a layer's annotations or labels, when both keys are there and well formed. */
export function tocHintOf (labels: Record<string, string> | undefined): TocHint | undefined {
  const cid = labels?.[LABELS.tocCid]
  const offset = labels?.[LABELS.tocOffset]
  if (cid == null || offset == null || !/^[0-9]{1,15}$/.test(offset)) return undefined
  try {
    return { cid: CID.parse(cid).toString(), offset: Number(offset) }
  } catch {
    return undefined
  }
}
