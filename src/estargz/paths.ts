import { UnsafePathError } from './errors.js'

/** A segment that is empty, `.` or `..` (so a leading or trailing `/`, or `//`, too). */
const NEEDS_CLEANING = /(?:^|\/)\.{0,2}(?:\/|$)/

/**
 * Normalises a tar or TOC name the way the reference reader does
 * (`strings.TrimPrefix(path.Clean("/"+name), "/")`): `./a//b/` → `a/b`, `/a` → `a`, `.` → ``.
 * `..` at the root is dropped, so never feed an unchecked name to the filesystem: use
 * {@link assertSafeEntryName} first.
 */
export function cleanEntryName (name: string): string {
  // Most names are clean already, or are a directory's clean name plus '/': no split, no join
  // (a TOC of thousands of entries is cleaned at every layer open).
  if (!NEEDS_CLEANING.test(name)) return name
  if (name.length > 1 && name.endsWith('/')) {
    const dir = name.slice(0, -1)
    if (!NEEDS_CLEANING.test(dir)) return dir
  }
  const out: string[] = []
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue
    if (part === '..') {
      out.pop()
      continue
    }
    out.push(part)
  }
  return out.join('/')
}

/** True when a `..` component would climb above the root. */
export function climbsOutOfRoot (name: string): boolean {
  if (!name.includes('..')) return false
  let depth = 0
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue
    if (part === '..') {
      if (depth === 0) return true
      depth--
    } else {
      depth++
    }
  }
  return false
}

/**
 * Rejects names a naive extractor would write outside the layer: `../x`, `a/../../b`, and (when
 * `allowAbsolute` is false) `/abs`. NUL bytes are rejected too: they cannot be in a Linux path.
 */
export function assertSafeEntryName (name: string, { allowAbsolute = false } = {}): void {
  if (name.includes('\0')) throw new UnsafePathError(name, 'contains a NUL byte')
  if (!allowAbsolute && name.startsWith('/')) throw new UnsafePathError(name, 'is absolute')
  if (climbsOutOfRoot(name)) throw new UnsafePathError(name)
}

/** Parent of a clean name (`a/b` → `a`, `a` → ``). */
export function parentName (clean: string): string {
  const i = clean.lastIndexOf('/')
  return i < 0 ? '' : clean.slice(0, i)
}

/** Last component of a clean name. */
export function baseName (clean: string): string {
  return clean.slice(clean.lastIndexOf('/') + 1)
}
