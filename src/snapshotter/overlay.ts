import { chmodSync, existsSync, lchownSync, mkdirSync, mkdtempSync } from 'node:fs'
import { lstat, readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { Mount } from '../wire/index.js'
import type { Kind } from './metadata.js'

/**
 * On-disk layout and mount options of containerd's overlayfs snapshotter
 * (`snapshots/overlay/overlay.go`): `<root>/snapshots/<id>/fs` is the upper (or only) directory,
 * `<root>/snapshots/<id>/work` the overlay work dir of active snapshots.
 */
export class OverlayLayout {
  readonly snapshotsDir: string
  /** overlayfs has an `index` feature we must switch off, as containerd does, when the module knows it */
  private readonly indexOff: boolean

  constructor (readonly root: string) {
    this.snapshotsDir = join(root, 'snapshots')
    this.indexOff = existsSync('/sys/module/overlay/parameters/index')
  }

  init (): void {
    mkdirSync(this.snapshotsDir, { recursive: true, mode: 0o700 })
  }

  dir (id: string): string { return join(this.snapshotsDir, id) }
  upperPath (id: string): string { return join(this.snapshotsDir, id, 'fs') }
  workPath (id: string): string { return join(this.snapshotsDir, id, 'work') }

  /**
   * Owner of a snapshot's root. Asynchronous on purpose: a remote snapshot's `fs` is a FUSE mount
   * served by this very process, and a synchronous stat of it would deadlock: the FUSE callbacks
   * need the event loop the synchronous call blocks.
   */
  async ownerOf (id: string): Promise<{ uid: number, gid: number }> {
    const st = await stat(this.upperPath(id))
    return { uid: st.uid, gid: st.gid }
  }

  /**
   * Makes `snapshots/new-XXXXXX/{fs,work}` (work only for active snapshots): the caller renames it
   * to `snapshots/<id>` inside the metadata transaction, so a crash leaves at worst a `new-*` or
   * an unowned `<id>` directory, which start-up and Cleanup remove.
   */
  prepareDirectory (kind: 'active' | 'view', parentOwner?: { uid: number, gid: number }): string {
    const td = mkdtempSync(join(this.snapshotsDir, 'new-'))
    const fs = join(td, 'fs')
    mkdirSync(fs)
    chmodSync(fs, 0o755) // not subject to the umask: the suite checks the mount root is exactly 0755
    if (kind === 'active') {
      mkdirSync(join(td, 'work'))
      chmodSync(join(td, 'work'), 0o711)
    }
    // the new layer's root belongs to whoever owns the parent's root (containerd does the same)
    if (parentOwner != null) lchownSync(fs, parentOwner.uid, parentOwner.gid)
    return td
  }

  /**
   * The mounts containerd gets for a snapshot, exactly as the overlayfs snapshotter builds them:
   * absolute paths, nearest parent first in `lowerdir`. For long chains containerd's mount code
   * (`mount.Mount.Mount` on Linux) compacts the option string itself (common-prefix `chdir` +
   * relative lowerdirs) when it exceeds a page, so the snapshotter returns full paths.
   */
  mounts (kind: Kind, id: string, parentIds: readonly string[]): Mount[] {
    if (parentIds.length === 0) {
      return [{ type: 'bind', source: this.upperPath(id), target: '', options: [kind === 'view' ? 'ro' : 'rw', 'rbind'] }]
    }
    const options: string[] = []
    if (this.indexOff) options.push('index=off')
    if (kind === 'active') {
      options.push(`workdir=${this.workPath(id)}`, `upperdir=${this.upperPath(id)}`)
    } else if (parentIds.length === 1) {
      return [{ type: 'bind', source: this.upperPath(parentIds[0] as string), target: '', options: ['ro', 'rbind'] }]
    }
    options.push(`lowerdir=${parentIds.map((p) => this.upperPath(p)).join(':')}`)
    return [{ type: 'overlay', source: 'overlay', target: '', options }]
  }
}

/**
 * containerd's `fs.DiskUsage`: every inode under `dir` (the root too) counted once, size in
 * allocated 512-byte blocks.
 */
export async function diskUsage (dir: string): Promise<{ size: number, inodes: number }> {
  const seen = new Set<string>()
  let size = 0n
  const walk = async (p: string): Promise<void> => {
    const st = await lstat(p, { bigint: true })
    const k = `${st.dev}:${st.ino}`
    if (!seen.has(k)) {
      seen.add(k)
      size += st.blocks * 512n
    }
    if (st.isDirectory()) {
      for (const name of await readdir(p)) await walk(join(p, name))
    }
  }
  await walk(dir)
  return { size: Number(size), inodes: seen.size }
}
