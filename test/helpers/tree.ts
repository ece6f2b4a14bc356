import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { lstat, readFile, readdir, readlink } from 'node:fs/promises'
import { join } from 'node:path'
import { sha256Hex } from '../../scripts/fixtures/digest.js'

/** What a tree-walk records of one path: everything a layer must preserve. */
export interface PathInfo {
  type: 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket'
  mode: number
  uid: number
  gid: number
  size?: number
  mtime: number
  target?: string
  rdev?: number
  sha256?: string
  xattrs: Record<string, string>
  ino: number
  nlink: number
}

function typeOf (st: import('node:fs').Stats): PathInfo['type'] {
  if (st.isFile()) return 'file'
  if (st.isDirectory()) return 'dir'
  if (st.isSymbolicLink()) return 'symlink'
  if (st.isCharacterDevice()) return 'char'
  if (st.isBlockDevice()) return 'block'
  if (st.isFIFO()) return 'fifo'
  return 'socket'
}

/**
 * All xattrs under a directory, by relative path, values hex-encoded (needs `getfattr`).
 * Asynchronous, like everything here: a synchronous child process or fs call on a FUSE mount
 * served by this same process would block the event loop its callbacks need.
 */
export async function xattrsUnder (root: string): Promise<Map<string, Record<string, string>>> {
  const out = new Map<string, Record<string, string>>()
  let text = ''
  try {
    text = (await promisify(execFile)('getfattr', ['-R', '-P', '-d', '-m', '-', '-e', 'hex', '--absolute-names', root], { encoding: 'utf8', maxBuffer: 1 << 28 })).stdout
  } catch (err) {
    text = (err as { stdout?: string }).stdout ?? ''
  }
  let current: Record<string, string> | undefined
  for (const line of text.split('\n')) {
    if (line.startsWith('# file: ')) {
      const abs = line.slice('# file: '.length)
      current = {}
      out.set(abs === root ? '' : abs.slice(root.length + 1), current)
    } else if (current != null && line.includes('=')) {
      const i = line.indexOf('=')
      current[line.slice(0, i)] = line.slice(i + 1)
    }
  }
  return out
}

/**
 * Walks a directory (lstat, no following) and records every path's metadata and content hash.
 * Reads files with async fs so it also works on a FUSE mount served by this process.
 */
export async function walkTree (root: string, { xattrs = true } = {}): Promise<Map<string, PathInfo>> {
  const out = new Map<string, PathInfo>()
  const xa = xattrs ? await xattrsUnder(root) : new Map<string, Record<string, string>>()
  const visit = async (rel: string): Promise<void> => {
    const abs = rel === '' ? root : join(root, rel)
    const st = await lstat(abs)
    const info: PathInfo = {
      type: typeOf(st),
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      mtime: Math.floor(st.mtimeMs / 1000),
      xattrs: xa.get(rel) ?? {},
      ino: st.ino,
      nlink: st.nlink
    }
    if (info.type === 'file') {
      info.size = st.size
      info.sha256 = sha256Hex(await readFile(abs))
    }
    if (info.type === 'symlink') info.target = await readlink(abs)
    if (info.type === 'char' || info.type === 'block') info.rdev = st.rdev
    out.set(rel, info)
    if (info.type === 'dir') {
      for (const name of (await readdir(abs)).sort()) await visit(rel === '' ? name : `${rel}/${name}`)
    }
  }
  await visit('')
  return out
}

/** Differences between two walks, as readable lines (empty when equal). */
export function diffTrees (a: Map<string, PathInfo>, b: Map<string, PathInfo>, { ignore = [] as Array<keyof PathInfo>, skip = [] as string[] } = {}): string[] {
  const diffs: string[] = []
  const keys = new Set([...a.keys(), ...b.keys()])
  const ignored = new Set<string>(['ino', 'nlink', ...ignore])
  for (const k of [...keys].sort()) {
    if (skip.includes(k)) continue
    const x = a.get(k)
    const y = b.get(k)
    if (x == null || y == null) { diffs.push(`${k}: only in ${x == null ? 'second' : 'first'}`); continue }
    for (const f of Object.keys({ ...x, ...y }) as Array<keyof PathInfo>) {
      if (ignored.has(f)) continue
      if (JSON.stringify(x[f]) !== JSON.stringify(y[f])) diffs.push(`${k}: ${f} ${JSON.stringify(x[f])} != ${JSON.stringify(y[f])}`)
    }
  }
  return diffs
}

/** Groups paths by inode: hardlinked files must share one. */
export function hardlinkGroups (t: Map<string, PathInfo>): string[][] {
  const by = new Map<number, string[]>()
  for (const [p, i] of t) if (i.type === 'file') by.set(i.ino, [...(by.get(i.ino) ?? []), p])
  return [...by.values()].filter(g => g.length > 1).map(g => g.sort()).sort()
}
