import { cleanEntryName, climbsOutOfRoot } from '../estargz/index.js'
import { DEFAULTS } from './config.js'
import { BadPrefetchListError } from './errors.js'
import type { VisibleFile } from './layer-files.js'
import type { RecordEntry } from './record.js'

/** One line of a prefetch list. */
export interface PrefetchPattern {
  /** 1-based line in the file. */
  line: number
  /** The path or glob, without a leading slash. */
  pattern: string
  /** Set when the pattern has glob characters. */
  glob?: RegExp
}

const GLOB_CHARS = /[*?[]/

/**
 * A glob as a regular expression over clean paths: `*` any characters but `/`, `?` one of them,
 * `[...]` a class (`[!...]` or `[^...]` negated), `**` as a whole path component any number of
 * components (none included), `\` escapes the next character.
 */
export function globToRegExp (glob: string): RegExp {
  let re = ''
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]
    if (c === '\\') {
      i++
      if (i >= glob.length) throw new Error('trailing backslash')
      re += escapeRe(glob[i])
    } else if (c === '*') {
      if (glob[i + 1] === '*') {
        const start = i === 0 || glob[i - 1] === '/'
        const end = i + 2 === glob.length || glob[i + 2] === '/'
        if (!start || !end) throw new Error('"**" must be a whole path component')
        i += 2
        if (i < glob.length) re += '(?:[^/]*(?:/[^/]*)*/)?' // "**/": zero or more components
        else re += '.*'
        continue
      }
      re += '[^/]*'
    } else if (c === '?') {
      re += '[^/]'
    } else if (c === '[') {
      const close = glob.indexOf(']', i + 2)
      if (close < 0) throw new Error('unclosed "["')
      let body = glob.slice(i + 1, close)
      let neg = false
      if (body.startsWith('!') || body.startsWith('^')) {
        neg = true
        body = body.slice(1)
      }
      if (body === '') throw new Error('empty "[]"')
      re += `[${neg ? '^/' : ''}${body.replace(/[\\\]^]/g, m => '\\' + m)}]`
      i = close
    } else {
      re += escapeRe(c)
    }
  }
  return new RegExp(`^${re}$`)
}

function escapeRe (c: string): string {
  return c.replace(/[.*+?^${}()|[\]\\/]/g, m => '\\' + m)
}

/**
 * Parses a prefetch list: one path or glob per line, relative to the image root (a leading `/`
 * is allowed); blank lines and `#` comments ignored. Bounded in lines and path length.
 */
export function parsePrefetchList (text: string, name = 'prefetch list'): PrefetchPattern[] {
  const out: PrefetchPattern[] = []
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i].trim()
    if (raw === '' || raw.startsWith('#')) continue
    const where = `${name} line ${i + 1}`
    if (Buffer.byteLength(raw) > DEFAULTS.maxPathBytes) throw new BadPrefetchListError(`${where}: longer than ${DEFAULTS.maxPathBytes} bytes`)
    if (raw.includes('\0')) throw new BadPrefetchListError(`${where}: holds a NUL byte`)
    if (climbsOutOfRoot(raw)) throw new BadPrefetchListError(`${where}: ${JSON.stringify(raw)} climbs out of the root`)
    if (out.length >= DEFAULTS.maxEntries) throw new BadPrefetchListError(`${name}: more than ${DEFAULTS.maxEntries} lines`)
    if (GLOB_CHARS.test(raw)) {
      const pattern = raw.replace(/^\/+/, '')
      try {
        out.push({ line: i + 1, pattern, glob: globToRegExp(pattern) })
      } catch (err) {
        throw new BadPrefetchListError(`${where}: bad glob ${JSON.stringify(raw)}: ${(err as Error).message}`)
      }
    } else {
      const pattern = cleanEntryName(raw)
      if (pattern === '') throw new BadPrefetchListError(`${where}: ${JSON.stringify(raw)} is the root`)
      out.push({ line: i + 1, pattern })
    }
  }
  return out
}

/**
 * Turns a prefetch list into record entries over the merged image: each literal path, and each
 * glob's matches (files, not directories, in byte order of their paths), in list order, each once,
 * with the topmost layer holding it. A literal path that is not in the image, or is a directory,
 * is an error; a glob matching nothing is returned in `unmatched`.
 */
export function expandPrefetchList (patterns: readonly PrefetchPattern[], view: ReadonlyMap<string, VisibleFile>, manifestDigest: string, name = 'prefetch list'): { entries: RecordEntry[], unmatched: PrefetchPattern[] } {
  const entries: RecordEntry[] = []
  const unmatched: PrefetchPattern[] = []
  const taken = new Set<string>()
  const take = (path: string, f: VisibleFile): void => {
    if (taken.has(path)) return
    taken.add(path)
    entries.push({ path, manifestDigest, layerIndex: f.layerIndex })
  }
  let sorted: string[] | undefined
  for (const p of patterns) {
    if (p.glob == null) {
      const f = view.get(p.pattern)
      if (f == null) throw new BadPrefetchListError(`${name} line ${p.line}: ${JSON.stringify(p.pattern)} is in no layer of the image`)
      if (f.type === 'dir') throw new BadPrefetchListError(`${name} line ${p.line}: ${JSON.stringify(p.pattern)} is a directory; "${p.pattern}/**" names the files under it`)
      take(p.pattern, f)
      continue
    }
    sorted ??= [...view.keys()].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
    let n = 0
    for (const path of sorted) {
      const f = view.get(path)
      if (f == null || f.type === 'dir' || !p.glob.test(path)) continue
      take(path, f)
      n++
    }
    if (n === 0) unmatched.push(p)
  }
  return { entries, unmatched }
}
