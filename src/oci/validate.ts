/**
 * JSON validation of manifests, indexes and configs against the OCI image spec (required
 * fields, schemaVersion 2, media type consistency). Every error names the blob it is about.
 */
import { isDigest } from './digest.js'
import { MalformedConfigError, MalformedIndexError, MalformedManifestError, UnknownMediaTypeError } from './errors.js'
import { isIndexMediaType, isManifestMediaType, MediaType } from './media-types.js'
import type { Descriptor, ImageConfig, Index, Manifest, Platform } from './types.js'

type ErrorClass = new (message: string) => Error

const utf8 = new TextDecoder('utf-8', { fatal: true })

function isObject (v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function parseJson (bytes: Uint8Array, blob: string, what: string, E: ErrorClass): Record<string, unknown> {
  let v: unknown
  try {
    v = JSON.parse(utf8.decode(bytes))
  } catch (err) {
    throw new E(`${what} ${blob} is not valid JSON: ${(err as Error).message}`)
  }
  if (!isObject(v)) throw new E(`${what} ${blob} is not a JSON object`)
  return v
}

function checkStringMap (v: unknown, field: string, blob: string, what: string, E: ErrorClass): void {
  if (v === undefined) return
  if (!isObject(v) || Object.values(v).some(x => typeof x !== 'string')) {
    throw new E(`${what} ${blob}: ${field} must be an object of strings`)
  }
}

function checkPlatform (v: unknown, field: string, blob: string, what: string, E: ErrorClass): void {
  if (v === undefined) return
  if (!isObject(v) || typeof v.os !== 'string' || typeof v.architecture !== 'string' ||
    (v.variant !== undefined && typeof v.variant !== 'string')) {
    throw new E(`${what} ${blob}: ${field} must have string os and architecture`)
  }
}

/** Validates one descriptor object in place; `field` says where it is for the message. */
export function checkDescriptor (v: unknown, field: string, blob: string, what: string, E: ErrorClass = MalformedManifestError): asserts v is Descriptor {
  if (!isObject(v)) throw new E(`${what} ${blob}: ${field} is not a descriptor object`)
  if (typeof v.mediaType !== 'string' || v.mediaType === '') throw new E(`${what} ${blob}: ${field}.mediaType is missing`)
  if (typeof v.digest !== 'string' || !isDigest(v.digest)) throw new E(`${what} ${blob}: ${field}.digest ${JSON.stringify(v.digest)} is not a valid digest`)
  if (typeof v.size !== 'number' || !Number.isSafeInteger(v.size) || v.size < 0) throw new E(`${what} ${blob}: ${field}.size must be a non-negative integer`)
  if (v.urls !== undefined && (!Array.isArray(v.urls) || v.urls.some(u => typeof u !== 'string'))) throw new E(`${what} ${blob}: ${field}.urls must be an array of strings`)
  checkStringMap(v.annotations, `${field}.annotations`, blob, what, E)
  checkPlatform(v.platform, `${field}.platform`, blob, what, E)
}

function checkSchema (v: Record<string, unknown>, blob: string, what: string, E: ErrorClass): void {
  if (v.schemaVersion !== 2) throw new E(`${what} ${blob}: schemaVersion must be 2, got ${JSON.stringify(v.schemaVersion)}`)
}

/** What a JSON document says it is, checked against the type the descriptor claims. */
function checkMediaType (v: Record<string, unknown>, descType: string | undefined, blob: string, what: string, E: ErrorClass): void {
  if (v.mediaType !== undefined && typeof v.mediaType !== 'string') throw new E(`${what} ${blob}: mediaType must be a string`)
  const own = v.mediaType as string | undefined
  if (own != null && descType != null && own !== descType) {
    throw new E(`${what} ${blob}: mediaType ${JSON.stringify(own)} does not match the descriptor's ${JSON.stringify(descType)}`)
  }
  const effective = own ?? descType
  // Docker documents must carry their media type; OCI ones should (1.1 says SHOULD).
  if (effective == null) throw new E(`${what} ${blob}: mediaType is missing`)
}

/**
 * Parses and validates an image manifest. `mediaType` is the type the referring descriptor (or
 * the registry's Content-Type) claims; when given it must agree with the document.
 */
export function parseManifest (bytes: Uint8Array, blob: string, mediaType?: string): Manifest {
  const E = MalformedManifestError
  const v = parseJson(bytes, blob, 'manifest', E)
  checkSchema(v, blob, 'manifest', E)
  checkMediaType(v, mediaType, blob, 'manifest', E)
  const mt = (v.mediaType as string | undefined) ?? mediaType as string
  if (!isManifestMediaType(mt)) {
    if (isIndexMediaType(mt)) throw new E(`manifest ${blob}: ${mt} is an index, not a manifest`)
    throw new UnknownMediaTypeError(blob, mt, 'manifest')
  }
  if (Array.isArray(v.manifests)) throw new E(`manifest ${blob}: has a "manifests" field, which only indexes have`)
  checkDescriptor(v.config, 'config', blob, 'manifest', E)
  if (!Array.isArray(v.layers)) throw new E(`manifest ${blob}: layers must be an array`)
  v.layers.forEach((l, i) => { checkDescriptor(l, `layers[${i}]`, blob, 'manifest', E) })
  if (v.subject !== undefined) checkDescriptor(v.subject, 'subject', blob, 'manifest', E)
  checkStringMap(v.annotations, 'annotations', blob, 'manifest', E)
  return v as unknown as Manifest
}

/** Parses and validates an image index / manifest list (also an OCI layout's index.json). */
export function parseIndex (bytes: Uint8Array, blob: string, mediaType?: string): Index {
  const E = MalformedIndexError
  const v = parseJson(bytes, blob, 'index', E)
  checkSchema(v, blob, 'index', E)
  // An OCI layout's index.json often omits mediaType: default to OCI when nothing says otherwise.
  checkMediaType(v, mediaType ?? (v.mediaType === undefined ? MediaType.OciIndex : undefined), blob, 'index', E)
  const mt = (v.mediaType as string | undefined) ?? mediaType ?? MediaType.OciIndex
  if (!isIndexMediaType(mt)) {
    if (isManifestMediaType(mt)) throw new E(`index ${blob}: ${mt} is a manifest, not an index`)
    throw new UnknownMediaTypeError(blob, mt, 'index')
  }
  if (!Array.isArray(v.manifests)) throw new E(`index ${blob}: manifests must be an array`)
  v.manifests.forEach((m, i) => { checkDescriptor(m, `manifests[${i}]`, blob, 'index', E) })
  if (v.subject !== undefined) checkDescriptor(v.subject, 'subject', blob, 'index', E)
  checkStringMap(v.annotations, 'annotations', blob, 'index', E)
  return v as unknown as Index
}

/** Parses and validates an image configuration (OCI or Docker). */
export function parseConfig (bytes: Uint8Array, blob: string): ImageConfig {
  const E = MalformedConfigError
  const v = parseJson(bytes, blob, 'config', E)
  if (typeof v.architecture !== 'string' || v.architecture === '') throw new E(`config ${blob}: architecture is missing`)
  if (typeof v.os !== 'string' || v.os === '') throw new E(`config ${blob}: os is missing`)
  const rootfs = v.rootfs
  if (!isObject(rootfs) || rootfs.type !== 'layers' || !Array.isArray(rootfs.diff_ids)) {
    throw new E(`config ${blob}: rootfs must be {"type":"layers","diff_ids":[...]}`)
  }
  rootfs.diff_ids.forEach((d, i) => {
    if (typeof d !== 'string' || !isDigest(d)) throw new E(`config ${blob}: rootfs.diff_ids[${i}] ${JSON.stringify(d)} is not a valid digest`)
  })
  if (v.config !== undefined && v.config !== null && !isObject(v.config)) throw new E(`config ${blob}: config must be an object`)
  if (v.history !== undefined && !Array.isArray(v.history)) throw new E(`config ${blob}: history must be an array`)
  return v as unknown as ImageConfig
}

/** The platform an image config describes. */
export function configPlatform (c: ImageConfig): Platform {
  const p: Platform = { os: c.os, architecture: c.architecture }
  if (typeof c.variant === 'string' && c.variant !== '') p.variant = c.variant
  return p
}
