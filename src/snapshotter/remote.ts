import type { RemoteLayerRef } from '../fs/index.js'
import { LABELS, type Labels } from '../wire/index.js'

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
 * CID annotation of a registry copy (inherited from the layer descriptor), else the layer digest
 * through the digest→CID index (plain CRI sends no urls label).
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
  const annotated = labels[LABELS.annotatedCid]
  if (annotated != null && /^[A-Za-z0-9]+$/.test(annotated)) return { cid: annotated, ...extra, via: 'annotation' }
  if (digest != null && resolveDigest != null) {
    const cid = await resolveDigest(digest)
    if (cid != null && cid !== '') return { cid, ...extra, via: 'digest-index' }
  }
  return undefined
}
