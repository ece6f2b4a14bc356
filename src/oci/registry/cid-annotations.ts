/**
 * The registry copy of an image published to IPFS: registries refuse descriptors whose `urls`
 * are not http(s) (Distribution answers `PUT manifest` with MANIFEST_BLOB_UNKNOWN), so each
 * `ipfs://<cid>` URL moves into the {@link IPFS_CID_ANNOTATION} annotation. Blobs are unchanged;
 * a manifest that changes gets a new digest, and the indexes above it are rewritten to name it.
 */
import { digestOf } from '../digest.js'
import { isIndexMediaType } from '../media-types.js'
import { IPFS_CID_ANNOTATION, type Descriptor } from '../types.js'
import type { PushImage, PushManifest } from './push.js'

const IPFS_URL = /^ipfs:\/\/([A-Za-z0-9]+)\/?$/

/** `desc` with its `ipfs://` URLs moved into the CID annotation; the same object when it has none. */
export function cidUrlsToAnnotation (desc: Descriptor): Descriptor {
  const urls = desc.urls ?? []
  const cid = urls.map(u => IPFS_URL.exec(u)?.[1]).find(c => c != null)
  if (cid == null) return desc
  const { urls: _, ...rest } = desc
  const others = urls.filter(u => !IPFS_URL.test(u))
  return { ...rest, ...(others.length > 0 ? { urls: others } : {}), annotations: { ...desc.annotations, [IPFS_CID_ANNOTATION]: cid } }
}

/**
 * `image` as a registry takes it: every descriptor in its manifests and indexes carries its CID
 * as an annotation instead of an `ipfs://` URL. Manifests without such URLs keep their bytes
 * (and digests); `image.manifests` stays children first, the root last.
 */
export function registryCopy (image: PushImage): PushImage {
  const renamed = new Map<string, Descriptor>() // old manifest digest → its rewritten descriptor
  const manifests: PushManifest[] = []
  for (const m of image.manifests) {
    const doc = JSON.parse(Buffer.from(m.bytes).toString('utf8')) as Record<string, unknown>
    let changed = false
    const fix = (d: Descriptor): Descriptor => {
      const moved = renamed.get(d.digest)
      const base = moved != null ? { ...d, digest: moved.digest, size: moved.size } : d
      const out = cidUrlsToAnnotation(base)
      if (out !== d) changed = true
      return out
    }
    if (isIndexMediaType(m.descriptor.mediaType) || Array.isArray(doc.manifests)) {
      doc.manifests = (doc.manifests as Descriptor[]).map(fix)
    } else {
      if (doc.config != null) doc.config = fix(doc.config as Descriptor)
      if (Array.isArray(doc.layers)) doc.layers = (doc.layers as Descriptor[]).map(fix)
    }
    const own = cidUrlsToAnnotation(m.descriptor)
    if (!changed) {
      manifests.push(own === m.descriptor ? m : { ...m, descriptor: own })
      continue
    }
    const bytes = Buffer.from(JSON.stringify(doc))
    const descriptor = { ...own, digest: digestOf(bytes), size: bytes.length }
    renamed.set(m.descriptor.digest, descriptor)
    manifests.push({ descriptor, bytes })
  }
  return { blobs: image.blobs, manifests }
}
