import { execFile } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { Labels } from '../../src/wire/index.js'
import type { RemoteLayerMounter, RemoteLayerRef, RemoteMount } from '../../src/fs/layer-mounter.js'

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

  /** Nothing mounted there (a failed mount): nothing to do, as the interface asks. */
  async unmount (mountpoint: string): Promise<void> {
    this.calls.push({ op: 'unmount', mountpoint })
    if (!this.mounted.has(mountpoint)) return
    await run('umount', [mountpoint])
    this.mounted.delete(mountpoint)
  }
}

/**
 * A mounter whose mounts of the CIDs in `slowCids` take `delayMs` and go on after the caller's
 * signal gave up on them, as the FUSE manager's did: the promise rejects at the abort, the mount
 * lands later. `unmount` cancels a mount in progress and resolves once it is undone (the manager's
 * answer), or, with `confirm = false`, fails without cancelling it (a manager that does not answer).
 */
export class LateTmpfsMounter extends TmpfsMounter {
  slowCids = new Set<string>()
  delayMs = 800
  confirm = true
  /** Mounts that landed after their caller gave up and were never undone. */
  readonly landedLate: string[] = []
  private readonly inflight = new Map<string, { cancelled: boolean, done: Promise<void> }>()

  override async mount (mountpoint: string, labels: Labels, layer: RemoteLayerRef, signal?: AbortSignal): Promise<RemoteMount> {
    if (!this.slowCids.has(layer.cid)) return await super.mount(mountpoint, labels, layer)
    this.calls.push({ op: 'mount', mountpoint, cid: layer.cid })
    const state = { cancelled: false, done: Promise.resolve() }
    state.done = (async () => {
      await new Promise(resolve => setTimeout(resolve, this.delayMs))
      if (state.cancelled) return
      try {
        await run('mount', ['-t', 'tmpfs', '-o', 'size=1m,ro', 'tmpfs', mountpoint])
        this.mounted.set(mountpoint, layer.cid)
        if (signal?.aborted === true) this.landedLate.push(mountpoint)
      } catch {
        // the directory is gone: nothing landed
      }
    })()
    this.inflight.set(mountpoint, state)
    await new Promise<void>((resolve, reject) => {
      signal?.addEventListener('abort', () => reject(new Error('cancelled by the caller')), { once: true })
      void state.done.then(resolve)
    })
    return { usage: async () => 4096 }
  }

  override async unmount (mountpoint: string): Promise<void> {
    if (!this.confirm) {
      this.calls.push({ op: 'unmount', mountpoint })
      throw new Error('the mounter does not answer')
    }
    const state = this.inflight.get(mountpoint)
    if (state != null) {
      state.cancelled = true
      await state.done
      this.inflight.delete(mountpoint)
    }
    await super.unmount(mountpoint)
  }

  /** Waits for every mount still in progress (landed or not). */
  async settle (): Promise<void> {
    await Promise.all([...this.inflight.values()].map(async s => { await s.done }))
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
