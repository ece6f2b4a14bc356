import { InvalidKeyError, InvalidLabelError, InvalidNamespaceError, RequestTooLargeError } from './errors.js'
import type { Labels } from '../wire/index.js'

/**
 * What the gRPC service accepts from a caller, checked before anything is looked up or created.
 * containerd validates labels (`labels.Validate`) and namespaces (`identifiers.Validate`) the same
 * way; snapshot keys it stores as opaque bytes, so the key rules are ours: a key that is empty,
 * huge, holds control characters or reads as a relative path step is never stored. (Keys never
 * become paths here: a snapshot's directory is named by its numeric id.)
 */
export const DEFAULTS = {
  /** longest snapshot key, parent or commit name, in UTF-8 bytes (containerd's own are ~70-100) */
  maxKeyBytes: 4096,
  /** containerd's `labels.Validate`: len(key) + len(value) in bytes */
  maxLabelSize: 4096,
  /** labels in one call, and on one snapshot (Update merges into the stored ones) */
  maxLabels: 256,
  /** filter strings in one List call (containerd's Walk sends one or two) */
  maxFilters: 16,
  /** bytes of one filter string: room for `labels."<k>"=="<v>"` with a label of maximal size */
  maxFilterBytes: 8192,
  /** field paths in one Update call */
  maxUpdatePaths: 256
}

export type Limits = typeof DEFAULTS

/** containerd's `identifiers.Validate`: what a namespace may be. */
const IDENTIFIER = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/
const MAX_IDENTIFIER = 76
/** C0 controls, DEL and C1 controls (NUL included) */
const CONTROL = /\p{Cc}/u
/** containerd truncates the label key it names in its error to this many bytes */
const LABEL_KEY_SHOWN = 10
/** keys are quoted in messages up to this many characters */
const KEY_SHOWN = 64

export function validateNamespace (ns: string): void {
  if (ns.length > MAX_IDENTIFIER) throw new InvalidNamespaceError(`namespace ${quote(ns)} greater than maximum length (${MAX_IDENTIFIER} characters): invalid argument`)
  if (!IDENTIFIER.test(ns)) throw new InvalidNamespaceError(`namespace ${quote(ns)} must match ${IDENTIFIER.source}: invalid argument`)
}

/** A key the call creates (Prepare/View key, Commit name): every rule. */
export function validateNewKey (field: string, key: string, limits: Limits): void {
  if (key === '') throw new InvalidKeyError(`snapshot ${field} must not be empty: invalid argument`)
  validateKeyRef(field, key, limits)
  const control = CONTROL.exec(key)
  if (control != null) {
    const cp = control[0].codePointAt(0)?.toString(16).toUpperCase().padStart(4, '0') ?? ''
    throw new InvalidKeyError(`snapshot ${field} ${quote(key)} contains control character U+${cp} at offset ${control.index}: invalid argument`)
  }
  if (key.split('/').some((part) => part === '.' || part === '..')) {
    throw new InvalidKeyError(`snapshot ${field} ${quote(key)} has a "." or ".." path component: invalid argument`)
  }
}

/**
 * A key the call only names (parent, the key of Commit/Remove/Stat/...): size only, so a
 * snapshot stored before the key rules existed can still be found and removed.
 */
export function validateKeyRef (field: string, key: string, limits: Limits): void {
  const size = Buffer.byteLength(key)
  if (size > limits.maxKeyBytes) throw new InvalidKeyError(`snapshot ${field} ${quote(key)} is ${size} bytes, more than ${limits.maxKeyBytes}: invalid argument`)
}

/** containerd's `labels.Validate` for each label, plus a cap on their number. */
export function validateLabels (labels: Labels, limits: Pick<Limits, 'maxLabels' | 'maxLabelSize'>): void {
  const keys = Object.keys(labels)
  if (keys.length > limits.maxLabels) throw new InvalidLabelError(`${keys.length} labels, more than the maximum of ${limits.maxLabels}: invalid argument`)
  for (const k of keys) {
    const size = Buffer.byteLength(k) + Buffer.byteLength(labels[k] ?? '')
    if (size > limits.maxLabelSize) {
      throw new InvalidLabelError(`label key and value greater than maximum size (${limits.maxLabelSize} bytes), key: ${truncateBytes(k, LABEL_KEY_SHOWN)}: invalid argument`)
    }
  }
}

export function validateFilters (filters: readonly string[], limits: Limits): void {
  if (filters.length > limits.maxFilters) throw new RequestTooLargeError(`${filters.length} filters, more than the maximum of ${limits.maxFilters}: invalid argument`)
  for (const f of filters) {
    const size = Buffer.byteLength(f)
    if (size > limits.maxFilterBytes) throw new RequestTooLargeError(`filter ${quote(f)} is ${size} bytes, more than ${limits.maxFilterBytes}: invalid argument`)
  }
}

export function validateUpdatePaths (paths: readonly string[], limits: Limits): void {
  if (paths.length > limits.maxUpdatePaths) throw new RequestTooLargeError(`${paths.length} update field paths, more than the maximum of ${limits.maxUpdatePaths}: invalid argument`)
}

/** A key or filter as messages show it: JSON-quoted (control characters escaped), long ones cut. */
function quote (s: string): string {
  return s.length <= KEY_SHOWN ? JSON.stringify(s) : `${JSON.stringify(s.slice(0, KEY_SHOWN))}…`
}

/** The first `n` bytes of `s` (as Go's k[:n]), never splitting a character. */
function truncateBytes (s: string, n: number): string {
  let out = ''
  let bytes = 0
  for (const ch of s) {
    bytes += Buffer.byteLength(ch)
    if (bytes > n) break
    out += ch
  }
  return out
}
