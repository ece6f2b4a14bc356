import { mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { setImmediate as yieldToEventLoop } from 'node:timers/promises'
import { FailedPreconditionError, ListTimeoutError, MountpointBusyError, NoRemoteLayerError, NoRemoteMounterError, NotStartedError, RemountError, SnapshotExistsError, UnavailableError } from './errors.js'
import { parseFilters } from './filters.js'
import { adaptInfo, MetadataStore } from './metadata.js'
import { diskUsage, OverlayLayout } from './overlay.js'
import { newRemoteMetrics, resolveRemoteLayer } from './remote.js'
import { DEFAULTS as LIMITS } from './validate.js'
import { LABELS, MAX_FALLBACK_MESSAGE, REMOTE_LABEL_VALUE, type Labels, type Mount } from '../wire/index.js'
import type { SnapshotInfo, SnapshotRecord, Usage } from './metadata.js'
import type { DigestResolver, FallbackReason, RemoteMetrics } from './remote.js'
import { mountsUnder, mountsUnderSync, unmountUnder, type RemoteLayerMounter, type RemoteLayerRef, type RemoteMount } from '../fs/index.js'
import type { Logger } from '../logging.js'

export const DEFAULTS = {
  /** start() succeeds even when a remote snapshot cannot be mounted again (it stays empty and Unavailable) */
  allowInvalidMountsOnRestart: false,
  /** stop() unmounts the remote snapshots (start() mounts them again) */
  unmountOnStop: true,
  /** containerd's label limit (key + value bytes) */
  maxLabelSize: LIMITS.maxLabelSize,
  /** labels one snapshot may hold (Update adds to the stored ones) */
  maxLabels: LIMITS.maxLabels,
  /** List matches filters for this long, then lets other calls run before it goes on */
  listSliceMs: 10,
  /** a List still matching after this long fails with DeadlineExceeded */
  listTimeoutMs: 10_000,
  /** a lazy mount that takes longer is aborted (the mounter gets an AbortSignal) and Prepare falls back */
  remoteMountTimeoutMs: 60_000
}

export interface SnapshotterOptions extends Partial<typeof DEFAULTS> {
  /** state directory: `metadata.db` and `snapshots/<id>/{fs,work}` */
  root: string
}

export interface SnapshotterComponents {
  logger: Logger
  /** mounts lazy layers; without it every Prepare is a normal snapshot */
  mounter?: RemoteLayerMounter
  /** compressed layer digest → CID (for CRI, which sends no urls label) */
  resolveDigest?: DigestResolver
}

export type { SnapshotInfo, Usage }

/** Why a Prepare is not a remote snapshot, and whether its directory can be handed out as it is. */
interface Fallback {
  reason: FallbackReason
  message: string
  clean: boolean
}

/**
 * containerd's overlayfs snapshotter semantics plus stargz-snapshotter's remote snapshot
 * protocol, over a SQLite metadata store. The gRPC service is a thin adapter over this class.
 */
export class Snapshotter {
  readonly root: string
  readonly metrics: RemoteMetrics = newRemoteMetrics()
  private readonly options: typeof DEFAULTS
  private readonly logger: Logger
  private readonly mounter?: RemoteLayerMounter
  private readonly resolveDigest?: DigestResolver
  private readonly layout: OverlayLayout
  private db?: MetadataStore
  /** remote snapshots by id: the mount handle, or undefined when it could not be mounted again */
  private readonly remote = new Map<string, RemoteMount | undefined>()
  /** A recovery of the remote mounts under way (`recoverRemote`): new remote mounts wait for it. */
  private recovery?: Promise<void>
  /** Remote mounts (mount to commit) under way: a recovery waits for them. */
  private readonly mounting = new Set<Promise<unknown>>()

  constructor (components: SnapshotterComponents, options: SnapshotterOptions) {
    this.root = resolve(options.root)
    this.options = { ...DEFAULTS, ...options }
    this.logger = components.logger
    if (components.mounter != null) this.mounter = components.mounter
    if (components.resolveDigest != null) this.resolveDigest = components.resolveDigest
    this.layout = new OverlayLayout(this.root)
  }

  get started (): boolean { return this.db != null }

  /**
   * Opens the metadata, removes what a crash left half-made, and mounts every remote snapshot
   * again, all before the caller starts serving.
   */
  async start (): Promise<void> {
    if (this.db != null) return
    mkdirSync(this.root, { recursive: true, mode: 0o700 })
    this.layout.init()
    const db = new MetadataStore(join(this.root, 'metadata.db'), { maxLabelSize: this.options.maxLabelSize, maxLabels: this.options.maxLabels })
    try {
      const kept = await this.keepHeldMounts(db)
      // other mounts left from the previous run are dead (FUSE server gone) or will be replaced
      const stuck = await unmountUnder(this.layout.snapshotsDir, kept)
      if (stuck.length > 0) this.logger.warn({ mounts: stuck }, 'could not unmount leftover mounts under snapshots/')
      await this.removeUnowned(db)
      await this.restoreRemote(db, kept)
    } catch (err) {
      await this.unmountRemote()
      this.remote.clear()
      db.close()
      throw err
    }
    this.db = db
  }

  /**
   * Mounts every remote snapshot the mounter does not hold (any more) again: for a mounter whose
   * mounts live in another process that died and was started anew. Failures are logged and
   * counted; those snapshots answer Unavailable until the next successful recovery.
   */
  async recoverRemote (): Promise<void> {
    const db = this.db
    if (db == null) throw new NotStartedError('snapshotter is not started')
    await this.recovered()
    // Alone: a Prepare mounting a layer meanwhile (through the new mounter) would have its mount
    // taken for a leftover and undone, or its snapshot, committed after the list was read, found
    // busy and marked failed for good. Those under way finish first; new ones wait.
    const recovery = (async () => {
      await Promise.allSettled([...this.mounting])
      const kept = await this.keepHeldMounts(db)
      await unmountUnder(this.layout.snapshotsDir, kept)
      await this.restoreRemote(db, kept, { tolerate: true })
    })()
    this.recovery = recovery.catch(() => {})
    try {
      await recovery
    } finally {
      this.recovery = undefined
    }
  }

  /** Waits while a recovery of the remote mounts runs. */
  private async recovered (): Promise<void> {
    while (this.recovery != null) await this.recovery
  }

  /** Runs a remote mount (through its commit) outside any recovery, which waits for it. */
  private async remoteMount<T> (fn: () => Promise<T>): Promise<T> {
    await this.recovered()
    const running = fn()
    this.mounting.add(running)
    try {
      return await running
    } finally {
      this.mounting.delete(running)
    }
  }

  async stop (): Promise<void> {
    const db = this.db
    if (db == null) return
    this.db = undefined
    if (this.options.unmountOnStop) await this.unmountRemote()
    this.remote.clear()
    db.close()
  }

  async prepare (namespace: string, key: string, parent: string, labels: Labels = {}): Promise<Mount[]> {
    let rec = await this.create(namespace, 'active', key, parent, labels)
    const target = labels[LABELS.snapshotRef]
    if (target != null && target !== '') {
      const outcome = await this.tryRemote(rec, target, labels)
      if (outcome === true) throw new SnapshotExistsError(`target snapshot ${JSON.stringify(target)}: already exists`)
      rec = await this.markFallback(rec, labels, outcome)
    }
    return await this.handOut(rec)
  }

  async view (namespace: string, key: string, parent: string, labels: Labels = {}): Promise<Mount[]> {
    return await this.handOut(await this.create(namespace, 'view', key, parent, labels))
  }

  /**
   * The mounts of a snapshot just created; when they are refused (a remote layer below is
   * unavailable) the snapshot goes again. containerd keeps nothing of a Prepare or View that
   * failed (its transaction is rolled back), so a snapshot kept here would be one it never
   * removes: each retry of a pull while the FUSE manager restarts would leave one more.
   */
  private async handOut (rec: SnapshotRecord): Promise<Mount[]> {
    try {
      return await this.mountsOf(rec)
    } catch (err) {
      try {
        this.store.remove(rec.namespace, rec.name)
        await this.removeDir(rec.id)
      } catch (e) {
        this.logger.warn({ key: rec.name, err: (e as Error).message }, 'could not remove the snapshot whose mounts were refused')
      }
      throw err
    }
  }

  async mounts (namespace: string, key: string): Promise<Mount[]> {
    const rec = this.store.get(namespace, key)
    if (rec.kind === 'committed') throw new FailedPreconditionError(`snapshot ${JSON.stringify(key)} is committed: only active and view snapshots have mounts: failed precondition`)
    return await this.mountsOf(rec)
  }

  async commit (namespace: string, name: string, key: string, labels: Labels = {}): Promise<void> {
    const rec = this.store.get(namespace, key)
    const usage = rec.kind === 'active' ? await diskUsage(this.layout.upperPath(rec.id)) : { size: 0, inodes: 0 }
    this.store.commit(namespace, name, key, labels, usage)
  }

  async remove (namespace: string, key: string): Promise<void> {
    const rec = this.store.remove(namespace, key)
    await this.removeDir(rec.id)
  }

  stat (namespace: string, key: string): SnapshotInfo {
    const { name, parent, kind, created, updated, labels } = this.store.get(namespace, key)
    return { name, parent, kind, created, updated, labels }
  }

  update (namespace: string, name: string, labels: Labels, fieldpaths: readonly string[] = []): SnapshotInfo {
    return this.store.update(namespace, name, labels, fieldpaths)
  }

  /**
   * Snapshots of the namespace matching any of the filters (containerd syntax; none = all). The
   * table is read at once (a consistent view); matching, whose cost the caller's filters decide,
   * runs in slices of `listSliceMs` so other calls are served in between, and gives up after
   * `listTimeoutMs` or when `signal` aborts (the caller went away).
   */
  async list (namespace: string, filters: readonly string[] = [], signal?: AbortSignal): Promise<SnapshotInfo[]> {
    const filter = parseFilters(filters) // InvalidFilterError before touching the store
    const infos = this.store.infos(namespace)
    if (filters.length === 0) return infos
    const started = performance.now()
    let sliceStart = started
    const out: SnapshotInfo[] = []
    for (const [i, info] of infos.entries()) {
      if (performance.now() - sliceStart >= this.options.listSliceMs) {
        await yieldToEventLoop()
        signal?.throwIfAborted()
        if (performance.now() - started > this.options.listTimeoutMs) {
          throw new ListTimeoutError(`List in namespace ${JSON.stringify(namespace)} gave up after ${this.options.listTimeoutMs} ms, having matched the filters against ${i} of ${infos.length} snapshots: deadline exceeded`)
        }
        sliceStart = performance.now()
      }
      if (filter.match(adaptInfo(info))) out.push(info)
    }
    return out
  }

  /** Active: disk usage of the upper dir now; remote: what the mounter reports; else: recorded at commit. */
  async usage (namespace: string, key: string): Promise<Usage> {
    const rec = this.store.get(namespace, key)
    const handle = this.remote.get(rec.id)
    if (handle?.usage != null) return { size: await handle.usage(), inodes: 0 }
    if (rec.kind === 'active') return await diskUsage(this.layout.upperPath(rec.id))
    return { size: rec.size, inodes: rec.inodes }
  }

  /** Removes every directory under `snapshots/` that no snapshot owns. */
  async cleanup (): Promise<void> {
    await this.removeUnowned(this.store)
  }

  private get store (): MetadataStore {
    if (this.db == null) throw new NotStartedError('snapshotter is not started')
    return this.db
  }

  /** Row and directory together: the directory is renamed into place inside the transaction. */
  private async create (namespace: string, kind: 'active' | 'view', key: string, parent: string, labels: Labels): Promise<SnapshotRecord> {
    const store = this.store
    store.validateLabels(labels)
    const parentId = parent !== '' ? store.find(namespace, parent)?.id : undefined
    const parentOwner = parentId != null ? await this.layout.ownerOf(parentId).catch(() => undefined) : undefined
    let td: string | undefined
    try {
      return store.create(namespace, kind, key, parent, labels, (id) => {
        // a directory with this id can only be a leftover of a transaction rolled back by a crash
        rmSync(this.layout.dir(id), { recursive: true, force: true })
        td = this.layout.prepareDirectory(kind, parentOwner)
        renameSync(td, this.layout.dir(id))
        td = undefined
      })
    } finally {
      if (td != null) rmSync(td, { recursive: true, force: true })
    }
  }

  private async mountsOf (rec: SnapshotRecord): Promise<Mount[]> {
    await this.checkAvailability(rec)
    return this.layout.mounts(rec.kind, rec.id, rec.parentIds)
  }

  /** stargz-snapshotter's checkAvailability: every remote layer below must be mounted and healthy. */
  private async checkAvailability (rec: SnapshotRecord): Promise<void> {
    for (const id of rec.parentIds) {
      if (!this.remote.has(id)) continue
      if (this.remote.get(id) == null) throw new UnavailableError(`remote layer of snapshot ${id} is not mounted (it failed to mount at start): unavailable`)
      try {
        await this.mounter?.check?.(this.layout.upperPath(id))
      } catch (err) {
        throw new UnavailableError(`remote layer of snapshot ${id} is unavailable: ${(err as Error).message}`)
      }
    }
  }

  /**
   * The remote snapshot protocol: mount the layer at the new snapshot's `fs` and commit it as
   * `target`. Returns true when done, else (after logging and counting) why the caller gets a
   * normal active snapshot instead, and whether its directory is still safe to hand out.
   */
  private async tryRemote (rec: SnapshotRecord, target: string, labels: Labels): Promise<true | Fallback> {
    const log = this.logger.child({ key: rec.name, target, namespace: rec.namespace })
    const fallback = (reason: FallbackReason, message: string, clean = true): Fallback => {
      this.metrics.fallbacks[reason]++
      log.warn({ 'remote-snapshot-prepared': 'false', reason, err: message }, 'falling back to a normal snapshot: the layer is downloaded and unpacked')
      return { reason, message, clean }
    }
    if (this.mounter == null) return fallback('no-mounter', 'no remote layer mounter is configured')
    let layer
    try {
      layer = await resolveRemoteLayer(labels, this.resolveDigest)
    } catch (err) {
      return fallback('no-remote-layer', `resolving the layer's CID failed: ${(err as Error).message}`)
    }
    if (layer == null) return fallback('no-remote-layer', 'the labels name no IPFS layer (no ipfs:// url, and the layer digest is not in the digest index)')
    return await this.remoteMount(async () => await this.mountRemote(rec, target, labels, layer, log, fallback))
  }

  /** tryRemote's mount and commit of `layer` at the snapshot's `fs`. */
  private async mountRemote (rec: SnapshotRecord, target: string, labels: Labels, layer: RemoteLayerRef, log: Logger, fallback: (reason: FallbackReason, message: string, clean?: boolean) => Fallback): Promise<true | Fallback> {
    if (this.mounter == null) return fallback('no-mounter', 'no remote layer mounter is configured')
    const mountpoint = this.layout.upperPath(rec.id)
    const signal = AbortSignal.timeout(this.options.remoteMountTimeoutMs)
    const started = performance.now()
    let handle: RemoteMount
    try {
      handle = await this.mounter.mount(mountpoint, labels, layer, signal)
    } catch (err) {
      const clean = await this.undoFailedMount(mountpoint, log)
      if (signal.aborted) return fallback('mount-timeout', `no lazy mount of ${layer.cid} within ${this.options.remoteMountTimeoutMs} ms`, clean)
      return fallback('mount-failed', `lazy mount of ${layer.cid} failed: ${(err as Error).message}`, clean)
    }
    try {
      this.remote.set(rec.id, handle)
      this.store.commit(rec.namespace, target, rec.name, { ...labels, [LABELS.remote]: REMOTE_LABEL_VALUE, [LABELS.cid]: layer.cid }, { size: 0, inodes: 0 })
    } catch (err) {
      // e.g. a concurrent Prepare committed the same target first: undo ours, report its error
      this.remote.delete(rec.id)
      await this.mounter.unmount(mountpoint).catch((e: Error) => { log.warn({ err: e.message }, 'unmount after failed commit') })
      try {
        this.store.remove(rec.namespace, rec.name)
      } catch {
        // already removed by a concurrent Remove: nothing left to undo
      }
      await this.removeDir(rec.id)
      throw err
    }
    this.metrics.prepared++
    log.info({ 'remote-snapshot-prepared': 'true', cid: layer.cid, via: layer.via, ms: Math.round(performance.now() - started) }, 'remote snapshot prepared')
    return true
  }

  /**
   * After a failed (or timed out) mount: nothing may be mounted on the directory, now or later,
   * before it becomes an ordinary snapshot that containerd writes the layer into. The mounter's
   * `unmount` cancels a mount still in progress (the FUSE manager finishes one the daemon gave up
   * on) and answers once it is undone. False when that cannot be confirmed.
   */
  private async undoFailedMount (mountpoint: string, log: Logger): Promise<boolean> {
    let clean = true
    try {
      await this.mounter?.unmount(mountpoint)
    } catch (err) {
      log.warn({ mountpoint, err: (err as Error).message }, 'could not confirm that the failed lazy mount is undone')
      clean = false
    }
    const stuck = await unmountUnder(mountpoint).catch(() => [mountpoint])
    if (stuck.length > 0 || (await mountsUnder(mountpoint)).length > 0) clean = false
    return clean
  }

  /**
   * The active snapshot a fallback returns: labelled with why (containerd's Stat shows it to the
   * puller). A directory a mount may still land on is never handed out: the snapshot then gets
   * a new one (a new id) and the old one is removed (or left to cleanup while still mounted).
   */
  private async markFallback (rec: SnapshotRecord, labels: Labels, why: Fallback): Promise<SnapshotRecord> {
    // bytes, as containerd counts the label limit (a cut character becomes U+FFFD)
    const message = Buffer.byteLength(why.message) > MAX_FALLBACK_MESSAGE ? `${Buffer.from(why.message).subarray(0, MAX_FALLBACK_MESSAGE - 3).toString('utf8')}…` : why.message
    const label = { [LABELS.fallbackReason]: `${why.reason}: ${message}` }
    if (!why.clean) {
      this.logger.warn({ key: rec.name, id: rec.id }, 'the snapshot gets a new directory: a lazy mount may still land on the old one')
      this.store.remove(rec.namespace, rec.name)
      await this.removeDir(rec.id)
      try {
        return await this.create(rec.namespace, 'active', rec.name, rec.parent, { ...labels, ...label })
      } catch {
        return await this.create(rec.namespace, 'active', rec.name, rec.parent, labels) // no room for one more label
      }
    }
    try {
      this.store.update(rec.namespace, rec.name, label, [`labels.${LABELS.fallbackReason}`])
    } catch (err) {
      this.logger.debug({ key: rec.name, err: (err as Error).message }, 'no room for the fallback-reason label')
    }
    return rec
  }

  private async removeDir (id: string): Promise<void> {
    const dir = this.layout.dir(id)
    if (this.remote.has(id)) {
      const handle = this.remote.get(id)
      this.remote.delete(id)
      if (handle != null) {
        try {
          await this.mounter?.unmount(this.layout.upperPath(id))
        } catch (err) {
          this.logger.warn({ id, err: (err as Error).message }, 'unmounting remote snapshot failed')
        }
      }
    }
    await this.rmUnmounted(dir)
  }

  /** Deletes a directory, but never through a mount: anything still mounted below is unmounted first or the removal is skipped. */
  private async rmUnmounted (dir: string): Promise<void> {
    if ((await mountsUnder(dir)).length > 0) {
      const stuck = await unmountUnder(dir)
      if (stuck.length > 0) {
        this.logger.warn({ dir, mounts: stuck }, 'not removing a directory that still has mounts')
        return
      }
    }
    try {
      await rm(dir, { recursive: true, force: true })
    } catch (err) {
      this.logger.warn({ dir, err: (err as Error).message }, 'failed to remove snapshot directory')
    }
  }

  private async removeUnowned (db: MetadataStore): Promise<void> {
    // the id set and the listing are read in the same tick, so no create can slip in between
    const ids = db.ids()
    const unowned = readdirSync(this.layout.snapshotsDir).filter((d) => !ids.has(d))
    for (const d of unowned) {
      this.logger.debug({ dir: d }, 'removing unowned snapshot directory')
      await this.rmUnmounted(join(this.layout.snapshotsDir, d))
    }
  }

  /**
   * The mounter's live mounts that belong to remote snapshots are kept (running containers stand
   * on them); any other it holds is unmounted. Returns the kept mountpoints.
   */
  private async keepHeldMounts (db: MetadataStore): Promise<Set<string>> {
    const kept = new Set<string>()
    const held = await this.mounter?.held?.() ?? []
    if (held.length === 0) return kept
    const wanted = new Set(db.withLabel(LABELS.remote).map(rec => this.layout.upperPath(rec.id)))
    for (const mp of held) {
      if (wanted.has(mp)) {
        kept.add(mp)
        continue
      }
      this.logger.info({ mountpoint: mp }, 'unmounting a lazy layer no remote snapshot owns')
      await this.mounter?.unmount(mp).catch((err: Error) => this.logger.warn({ mountpoint: mp, err: err.message }, 'unmounting a leftover lazy layer failed'))
    }
    return kept
  }

  private async restoreRemote (db: MetadataStore, kept: Set<string>, { tolerate = this.options.allowInvalidMountsOnRestart } = {}): Promise<void> {
    for (const rec of db.withLabel(LABELS.remote)) {
      const mountpoint = this.layout.upperPath(rec.id)
      const log = this.logger.child({ key: rec.name, namespace: rec.namespace, id: rec.id })
      try {
        mkdirSync(mountpoint, { recursive: true })
        if (!kept.has(mountpoint) && mountsUnderSync(mountpoint).length > 0) throw new MountpointBusyError(`${mountpoint} is still mounted`)
        if (this.mounter == null) throw new NoRemoteMounterError('no remote layer mounter configured')
        const layer = await resolveRemoteLayer(rec.labels, this.resolveDigest)
        if (layer == null) throw new NoRemoteLayerError('labels name no IPFS layer')
        this.remote.set(rec.id, await this.mounter.mount(mountpoint, rec.labels, layer, AbortSignal.timeout(this.options.remoteMountTimeoutMs)))
        this.metrics.remounted++
        log.info({ cid: layer.cid, kept: kept.has(mountpoint) }, kept.has(mountpoint) ? 'remote snapshot still mounted: kept' : 'remote snapshot mounted again')
      } catch (err) {
        this.metrics.remountFailures++
        if (!tolerate) {
          throw new RemountError(`cannot mount remote snapshot ${JSON.stringify(rec.name)} (namespace ${JSON.stringify(rec.namespace)}) again: ${(err as Error).message}`, { cause: err })
        }
        this.remote.set(rec.id, undefined)
        log.error({ err: (err as Error).message }, 'remote snapshot left empty: remove it with `ctr snapshot rm`')
      }
    }
  }

  private async unmountRemote (): Promise<void> {
    for (const [id, handle] of this.remote) {
      if (handle == null) continue
      try {
        await this.mounter?.unmount(this.layout.upperPath(id))
      } catch (err) {
        this.logger.warn({ id, err: (err as Error).message }, 'unmounting remote snapshot at stop failed')
      }
    }
  }
}
