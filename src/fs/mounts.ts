import { stat } from 'node:fs/promises'
import { resolve } from 'node:path'
import { Activity } from './activity.js'
import { DEFAULTS } from './config.js'
import { FuseMount, type FuseMountOptions } from './fuse.js'
import { MountError } from './errors.js'
import { fuseMountsUnder, lazyUnmount } from './mountinfo.js'
import { LayerFs, type LayerFsComponents, type LayerFsOptions } from './layer.js'
import type { Logger } from '../logging.js'
import type { RangeSource } from '../source/index.js'

/** True when the mount's server is gone (the kernel answers ENOTCONN, Node's errno) or does not answer. */
async function isStale (mountpoint: string, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      stat(mountpoint).then(() => false, (err: NodeJS.ErrnoException) => err.code === 'ENOTCONN' || err.code === 'ECONNABORTED'),
      new Promise<boolean>(resolve => { timer = setTimeout(() => resolve(true), timeoutMs) })
    ])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * Clears the stale FUSE mounts under `root` (left by a crashed or killed run) and returns
 * their mountpoints. Live mounts of other processes are left alone.
 */
export async function clearStaleMounts (root: string, logger: Logger, timeoutMs = DEFAULTS.unmountTimeoutMs): Promise<string[]> {
  const cleared: string[] = []
  for (const m of await fuseMountsUnder(root)) {
    if (!await isStale(m.mountpoint, timeoutMs)) {
      logger.warn({ mountpoint: m.mountpoint, source: m.source }, 'a live FUSE mount of another process is under the mount root; leaving it')
      continue
    }
    await lazyUnmount(m.mountpoint)
    logger.info({ mountpoint: m.mountpoint }, 'cleared stale FUSE mount')
    cleared.push(m.mountpoint)
  }
  return cleared
}

export interface MountManagerOptions {
  /** Directory under which mounts live; stale mounts there are cleared by `start()`. */
  root?: string
  /** Options for every FUSE mount. */
  fuse?: FuseMountOptions
}

interface Active { mount: FuseMount, fs: LayerFs, source?: RangeSource }

/**
 * Tracks the active layer mounts of a process. `mount` takes ownership of the LayerFs:
 * unmounting stops it. `stop()` unmounts everything (also on SIGTERM, wired by the daemon).
 */
export class MountManager {
  private readonly log: Logger
  private readonly active = new Map<string, Active>()
  /** Mounts and on-demand reads of every layer here: the background fetches yield to them. */
  readonly activity = new Activity()

  constructor (components: { logger: Logger }, private readonly options: MountManagerOptions = {}) {
    this.log = components.logger
  }

  async start (): Promise<void> {
    if (this.options.root != null) await clearStaleMounts(this.options.root, this.log)
  }

  async stop (): Promise<void> {
    const results = await Promise.allSettled([...this.active.keys()].map(async mp => await this.unmount(mp)))
    for (const r of results) if (r.status === 'rejected') this.log.error({ err: (r.reason as Error).message }, 'unmount failed during stop')
  }

  /** Starts `fs` (prefetch) and mounts it at `mountpoint`. */
  async mount (mountpoint: string, fs: LayerFs, options: FuseMountOptions = {}): Promise<FuseMount> {
    const mp = resolve(mountpoint)
    if (this.active.has(mp)) throw new MountError(mp, 'already mounted by this process')
    const mount = new FuseMount({ fs, logger: this.log }, mp, { ...this.options.fuse, ...options })
    this.active.set(mp, { mount, fs })
    try {
      const t0 = performance.now()
      await fs.start()
      const t1 = performance.now()
      await mount.mount()
      // Until the kernel asks for the root's attributes, the FUSE root inode has the bare
      // `rootmode` of the mount call (a directory with no permission bits), and an overlay
      // mounted on it now keeps that mode for its own root: EACCES for every user but root.
      // An asynchronous stat, answered by this very process, fetches the real attributes.
      await stat(mp)
      this.log.debug({ mountpoint: mp, prefetchMs: Math.round(t1 - t0), fuseMs: Math.round(performance.now() - t1) }, 'layer mount steps')
    } catch (err) {
      this.active.delete(mp)
      await fs.stop().catch(() => {})
      throw err
    }
    return mount
  }

  /**
   * Opens the eStargz layer in `components.source` (footer, TOC checked against
   * `options.tocDigest`), or takes `opened` (from `openLayer` over the same source), and mounts
   * it. Takes the source over: it is closed when the mount fails (nothing is left mounted then)
   * and at unmount.
   */
  async mountLayer (mountpoint: string, components: LayerFsComponents, options: LayerFsOptions = {}, opened?: LayerFs): Promise<LayerFs> {
    const done = this.activity.begin()
    try {
      const fs = opened ?? await LayerFs.open({ activity: this.activity, ...components }, options)
      await this.mount(mountpoint, fs)
      const active = this.active.get(resolve(mountpoint))
      if (active != null) active.source = components.source
      return fs
    } catch (err) {
      await components.source.close?.().catch(() => {})
      throw err
    } finally {
      done()
    }
  }

  /**
   * Opens a layer as `mountLayer` does (footer, TOC checked against `options.tocDigest`) without
   * mounting it, for a mount known to come: `mountLayer(mp, components, options, fs)` then
   * mounts it with the same `components` (and takes the source over). The source is closed when
   * the open fails; otherwise it stays the caller's until that mount (`fs.stop()` if none comes).
   */
  async openLayer (components: LayerFsComponents, options: LayerFsOptions = {}): Promise<LayerFs> {
    const done = this.activity.begin()
    try {
      return await LayerFs.open({ activity: this.activity, ...components }, options)
    } catch (err) {
      await components.source.close?.().catch(() => {})
      throw err
    } finally {
      done()
    }
  }

  /** Unmounts (lazily if files are open) and stops the layer's filesystem (and closes its source, if `mountLayer` made it). */
  async unmount (mountpoint: string): Promise<void> {
    const mp = resolve(mountpoint)
    const a = this.active.get(mp)
    if (a == null) return
    try {
      await a.mount.unmount()
    } finally {
      this.active.delete(mp)
      await a.fs.stop()
      await a.source?.close?.().catch(() => {})
    }
  }

  get (mountpoint: string): { mount: FuseMount, fs: LayerFs } | undefined {
    return this.active.get(resolve(mountpoint))
  }

  list (): string[] {
    return [...this.active.keys()]
  }
}
