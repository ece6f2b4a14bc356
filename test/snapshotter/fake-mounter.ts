import { execFile } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { Labels } from '../../src/snapshotter/api.js'
import type { RemoteLayerMounter, RemoteLayerRef, RemoteMount } from '../../src/snapshotter/remote.js'

const run = promisify(execFile)

/**
 * A stand-in for the FUSE layer mounter: a real tmpfs mount at the mountpoint holding
 * `layer.txt` (the CID) — a real mount, so restart and unmount behaviour are exercised, but no
 * IPFS. CIDs in `failCids` make `mount` throw.
 */
export class TmpfsMounter implements RemoteLayerMounter {
  readonly mounted = new Map<string, string>()
  readonly calls: Array<{ op: 'mount' | 'unmount', mountpoint: string, cid?: string }> = []
  failCids = new Set<string>()

  async mount (mountpoint: string, _labels: Labels, layer: RemoteLayerRef): Promise<RemoteMount> {
    this.calls.push({ op: 'mount', mountpoint, cid: layer.cid })
    if (this.failCids.has(layer.cid)) throw new Error(`cannot fetch ${layer.cid}`)
    await run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mountpoint])
    await writeFile(join(mountpoint, 'layer.txt'), layer.cid)
    this.mounted.set(mountpoint, layer.cid)
    return { usage: async () => 4096 }
  }

  async unmount (mountpoint: string): Promise<void> {
    this.calls.push({ op: 'unmount', mountpoint })
    await run('umount', [mountpoint])
    this.mounted.delete(mountpoint)
  }
}

/**
 * A mounter whose mounts outlive the snapshotter, as the FUSE manager's do: `mount` of a
 * mountpoint it already holds with the same CID keeps it (no remount), and `held()` lists them.
 */
export class HoldingTmpfsMounter extends TmpfsMounter {
  override async mount (mountpoint: string, labels: Labels, layer: RemoteLayerRef): Promise<RemoteMount> {
    if (this.mounted.get(mountpoint) === layer.cid) {
      this.calls.push({ op: 'mount', mountpoint, cid: layer.cid })
      return { usage: async () => 4096 }
    }
    return await super.mount(mountpoint, labels, layer)
  }

  async held (): Promise<string[]> {
    return [...this.mounted.keys()]
  }
}
