import { readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { resolve, sep } from 'node:path'
import { detachMount } from './unmount-helper.js'

/** The kernel's list of this process's mounts. */
const MOUNTINFO = '/proc/self/mountinfo'

export interface MountInfo {
  mountpoint: string
  /** `fuse`, `fuse.<subtype>`, `overlay`, ... */
  fstype: string
  /** The fsname given at mount time. */
  source: string
}

/** `\040`-style octal escapes of /proc/self/mountinfo. */
function unescape (s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)))
}

/** Parses mountinfo text: every mount, in mount order. */
export function parseMountInfo (text: string): MountInfo[] {
  const out: MountInfo[] = []
  for (const line of text.split('\n')) {
    if (line === '') continue
    const fields = line.split(' ')
    const dash = fields.indexOf('-', 6)
    if (dash < 0 || fields.length < dash + 3) continue
    out.push({ mountpoint: unescape(fields[4]), fstype: fields[dash + 1], source: unescape(fields[dash + 2]) })
  }
  return out
}

/** The mounts at or below `dir`, deepest first, so nested mounts go before their parents. */
function under (all: MountInfo[], dir: string): MountInfo[] {
  const base = resolve(dir)
  return all
    .filter(m => m.mountpoint === base || m.mountpoint.startsWith(base + sep))
    .sort((a, b) => b.mountpoint.length - a.mountpoint.length)
}

/** Mount points at or below `dir` (any filesystem), deepest first. */
export async function mountsUnder (dir: string): Promise<string[]> {
  return under(parseMountInfo(await readFile(MOUNTINFO, 'utf8')), dir).map(m => m.mountpoint)
}

/** Synchronous variant, for checks inside a transaction. */
export function mountsUnderSync (dir: string): string[] {
  return under(parseMountInfo(readFileSync(MOUNTINFO, 'utf8')), dir).map(m => m.mountpoint)
}

/** FUSE mounts at or below `dir`, deepest first. */
export async function fuseMountsUnder (dir: string): Promise<MountInfo[]> {
  return under(parseMountInfo(await readFile(MOUNTINFO, 'utf8')), dir).filter(m => m.fstype === 'fuse' || m.fstype.startsWith('fuse.'))
}

/** Detaches a mount lazily (see {@link detachMount}: through the process's unmount helper once one is started). */
export async function lazyUnmount (mountpoint: string): Promise<void> {
  await detachMount(mountpoint)
}

/**
 * Lazily unmounts everything at or below `dir` (dead FUSE mounts after a crash included), except
 * `keep`, deepest first. Returns the mount points that could not be unmounted.
 */
export async function unmountUnder (dir: string, keep: ReadonlySet<string> = new Set()): Promise<string[]> {
  const failed: string[] = []
  for (const mp of await mountsUnder(dir)) {
    if (keep.has(mp)) continue
    try {
      await lazyUnmount(mp)
    } catch {
      failed.push(mp)
    }
  }
  return failed
}
