import { LABELS, type Labels } from '../wire/index.js'

/** The layer a Prepare names, once resolved to IPFS. */
export interface RemoteLayerRef {
  cid: string
  /** compressed layer digest when the labels carry one */
  digest?: string
  /** TOC digest to verify against, when the labels carry one */
  tocDigest?: string
  /** how the CID was found */
  via: 'urls' | 'digest-index' | 'stored'
}

/** Handle of one lazy mount. */
export interface RemoteMount {
  /** bytes this layer occupies locally (fetched/cached); reported by `Usage` */
  usage?: () => Promise<number>
}

/** A layer a pull is about to Prepare: enough to open it (footer and TOC) ahead. */
export interface WarmLayer {
  cid: string
  tocDigest: string
}

/**
 * Mounts a layer lazily at a directory (implemented with FUSE by the fs module). The snapshotter
 * calls `mount` on Prepare and on restart, `unmount` on Remove/stop, and `check` (when present)
 * before returning mounts that stack on the layer. `mount` must reject promptly once `signal`
 * aborts (the snapshotter's mount timeout). After a failed mount the snapshotter calls
 * `unmount` of that mountpoint: it must resolve only once nothing is mounted there and nothing
 * will be (a mount still in progress elsewhere, e.g. in the FUSE manager, is cancelled first),
 * and succeed when nothing was mounted.
 */
export interface RemoteLayerMounter {
  mount (mountpoint: string, labels: Labels, layer: RemoteLayerRef, signal?: AbortSignal): Promise<RemoteMount>
  unmount (mountpoint: string): Promise<void>
  /**
   * Opens these layers (footer and TOC) ahead of the Prepares a pull is about to send, all at
   * once, so each mount finds its TOC ready. Resolves when all are open or failed; a failure only
   * means the mount reads the TOC itself.
   */
  warm?: (layers: WarmLayer[], signal?: AbortSignal) => Promise<void>
  /** throws when the mount is not healthy; the snapshotter then answers Unavailable */
  check?: (mountpoint: string) => Promise<void>
  /**
   * Mounts this mounter still serves from before the snapshotter (re)started: a mounter whose
   * mounts live in another process (the FUSE manager) keeps them across a daemon restart, so
   * containers on them keep working. start() keeps those that belong to remote snapshots
   * (their `mount` must then succeed without remounting) and unmounts the rest.
   */
  held?: () => Promise<string[]>
}

/** Maps a compressed layer digest to the CID that holds it (our digest→CID index). */
export type DigestResolver = (digest: string) => string | undefined | Promise<string | undefined>

/**
 * Why a Prepare with a target ref did not become a remote snapshot: no mounter configured; the
 * labels name no IPFS layer; the mount failed; the mount took longer than the mount timeout.
 */
export type FallbackReason = 'no-mounter' | 'no-remote-layer' | 'mount-failed' | 'mount-timeout'

/** Counters of the remote path, for /metrics and `stats`. */
export interface RemoteMetrics {
  /** Prepares answered with a committed remote snapshot (AlreadyExists) */
  prepared: number
  /** Prepares that fell back to a normal snapshot, by reason */
  fallbacks: Record<FallbackReason, number>
  /** remote snapshots mounted again at start */
  remounted: number
  /** remote snapshots that could not be mounted again at start */
  remountFailures: number
}

export function newRemoteMetrics (): RemoteMetrics {
  return { prepared: 0, fallbacks: { 'no-mounter': 0, 'no-remote-layer': 0, 'mount-failed': 0, 'mount-timeout': 0 }, remounted: 0, remountFailures: 0 }
}

/**
 * Finds the IPFS layer a Prepare's labels name: first `ipfs://<cid>` in the urls label, else the
 * layer digest through the digest→CID index (plain CRI sends no urls label).
 */
export async function resolveRemoteLayer (labels: Labels, resolveDigest?: DigestResolver): Promise<RemoteLayerRef | undefined> {
  const digest = labels[LABELS.criLayerDigest] ?? labels[LABELS.stargzDigest]
  const tocDigest = labels[LABELS.tocDigest]
  const extra = { ...(digest != null ? { digest } : {}), ...(tocDigest != null ? { tocDigest } : {}) }
  const stored = labels[LABELS.cid]
  if (stored != null && stored !== '') return { cid: stored, ...extra, via: 'stored' }
  for (const url of (labels[LABELS.remoteUrls] ?? '').split(',')) {
    const m = /^ipfs:\/\/([A-Za-z0-9]+)\/?$/.exec(url.trim())
    if (m?.[1] != null) return { cid: m[1], ...extra, via: 'urls' }
  }
  if (digest != null && resolveDigest != null) {
    const cid = await resolveDigest(digest)
    if (cid != null && cid !== '') return { cid, ...extra, via: 'digest-index' }
  }
  return undefined
}
