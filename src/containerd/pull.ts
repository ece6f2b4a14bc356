import { randomBytes } from 'node:crypto'
import { setMaxListeners } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { DiffIdMismatchError, hostPlatform, resolveImages } from '../oci/index.js'
import { silentLogger, type Logger } from '../logging.js'
import { BadImageError, NotLazyError, UnavailableError, isAlreadyExists, isNotFound } from './errors.js'
import type { WarmLayer } from '../fs/index.js'
import { LABELS, chainIds, childGcLabels, commaListWithinLimit, inheritedLabels, tocHintOf, type ContainerdDescriptor, type Labels, type Mount } from '../wire/index.js'
import type { ContainerdClient } from './client.js'
import type { Descriptor, ImageReader, Platform, ResolvedImage } from '../oci/index.js'
import { anyOf } from '../signals.js'

export const DEFAULTS = {
  /** the pull's lease expires by itself if we crash before deleting it */
  leaseExpireMs: 3600_000,
  /** Prepare attempts when a concurrent unpack raced us on the same key (containerd: 3) */
  prepareAttempts: 3,
  /** stargz-snapshotter's ctr-remote / nerdctl default prefetch label value (bytes); 0 = no label */
  prefetchBytes: 0,
  /**
   * After the snapshotter restarts, containerd reaches it again only after gRPC's reconnect
   * backoff (0.5–3 s seen): until then a Prepare, which goes through to the snapshotter, answers
   * Unavailable (as it does while the snapshotter's FUSE manager is being started again). Such a
   * Prepare is tried again for up to this long from its first Unavailable...
   */
  snapshotterReconnectMs: 10_000,
  /** ...this often */
  snapshotterReconnectIntervalMs: 200
}

/** A reader that can name a blob's CID (IpfsImageReader); others give no `remote/urls` label. */
export type PullReader = ImageReader & {
  cidOf?: (desc: Descriptor, signal?: AbortSignal) => Promise<{ toString: () => string }>
}

/** What `labelsFor` is told about a layer. */
export interface PullLayerContext {
  index: number
  descriptor: Descriptor
  diffId: string
  chainId: string
  /** `ipfs://<cid>` when the source knows the layer's CID */
  url?: string
}

export type PullEvent =
  | { type: 'resolved', name: string, manifest: string, layers: number, platform: Platform }
  | { type: 'content', kind: 'index' | 'manifest' | 'config' | 'layer', digest: string, size: number, written: number, existed: boolean }
  | { type: 'layer', index: number, total: number, digest: string, chainId: string, state: 'exists' | 'lazy' | 'applying' | 'applied', fallbackReason?: string }
  | { type: 'done', name: string, chainId: string, bytesWritten: number }

export interface PullOptions {
  client: ContainerdClient
  source: PullReader
  /** image record name (`ipfs://CID` for the CLI) */
  name: string
  /** snapshotter to unpack into: `ipfs-estargz` for lazy layers, `overlayfs` for a full pull */
  snapshotter: string
  /** which image of an index; default the host's */
  platform?: Platform
  /** default: the client's namespace */
  namespace?: string
  /**
   * Ask the snapshotter for lazy layers (send the remote-snapshot labels). With `false` the
   * labels that name the layer's location are left out, so every layer is downloaded into the
   * content store and applied by containerd's differ.
   */
  lazy: boolean
  /**
   * extra Prepare labels per layer (merged last). containerd hands only `containerd.io/snapshot/…`
   * and `containerd.io/snapshot.ref` labels on to the snapshotter; others stay in its metadata.
   */
  labelsFor?: (layer: PullLayerContext) => Labels
  onProgress?: (event: PullEvent) => void
  /**
   * Fail (NotLazyError) as soon as a layer is not mounted lazily, instead of downloading and
   * applying it; nothing of the pull is kept (no image record, the lease is deleted).
   */
  requireLazy?: boolean
  /**
   * Opens the layers (footer and TOC) in the snapshotter's mounter ahead of the Prepares, all at
   * once: called before the first Prepare with every layer whose snapshot does not exist yet, not
   * awaited (each mount waits for its own layer).
   */
  warm?: (layers: WarmLayer[], signal?: AbortSignal) => Promise<void>
  signal?: AbortSignal
  logger?: Logger
}

export interface PulledLayer {
  digest: string
  diffId: string
  chainId: string
  /** the layer's CID, when the source knows it (for the daemon's digest→CID index) */
  cid?: string
  /** the snapshotter committed it remotely: no layer bytes went to the content store */
  lazy: boolean
  /** the snapshot existed before this pull (nothing was done) */
  existed: boolean
  /** why the layer was downloaded and applied instead of mounted lazily (the snapshotter's reason when it gives one) */
  fallbackReason?: string
  /** bytes of this layer written to the content store */
  bytesWritten: number
}

export interface PullResult {
  name: string
  /** the image record's target (the root index or manifest) */
  target: ContainerdDescriptor
  manifest: ContainerdDescriptor
  config: ContainerdDescriptor
  platform: Platform
  /** chainID of the top layer: `ctr run` mounts this */
  chainId: string
  layers: PulledLayer[]
  /** total bytes sent to containerd's content store (index + manifest + config + layers applied) */
  bytesWritten: number
}

function plain (d: Descriptor): ContainerdDescriptor {
  return { mediaType: d.mediaType, digest: d.digest, size: d.size }
}

/** containerd's unpack key: `extract-<nanos>-<random> <chainID>` (snapshots.UnpackKeyFormat). */
function unpackKey (chainId: string): string {
  const nanos = Number(process.hrtime.bigint() % 1_000_000_000n)
  return `extract-${nanos}-${randomBytes(3).toString('base64url')} ${chainId}`
}

/**
 * Pulls an image into containerd the way containerd's own pull does, with the source being
 * IPFS: under a lease (deleted at the end), the index, manifest and config go into the content
 * store with containerd's GC labels, the layers are unpacked by containerd's algorithm (Stat →
 * Prepare with `containerd.io/snapshot.ref` → AlreadyExists means the snapshotter mounted the
 * layer remotely; otherwise the blob is written, applied with the Diff service and committed),
 * the config gets the GC reference to the top snapshot, and the image record is created or
 * updated. On failure the prepared snapshot is removed and the lease deleted, so GC collects
 * what was written.
 */
export async function pullImage (options: PullOptions): Promise<PullResult> {
  const { source, snapshotter, signal } = options
  const logger = (options.logger ?? silentLogger()).child({ component: 'containerd-pull', image: options.name })
  if (signal != null) setMaxListeners(Infinity, signal)
  const base = options.namespace != null ? options.client.withNamespace(options.namespace) : options.client
  const emit = (e: PullEvent): void => { options.onProgress?.(e) }

  const resolution = await resolveImages(source, { platform: options.platform ?? hostPlatform(), signal })
  const image = resolution.images[0]
  if (image == null) throw new BadImageError(`no image in ${source.name}`)
  const diffIds = image.config.rootfs?.diff_ids ?? []
  if (diffIds.length !== image.layers.length) {
    throw new BadImageError(`${source.name}: manifest ${image.descriptor.digest} has ${image.layers.length} layers but the config has ${diffIds.length} diff_ids`)
  }
  const chain = chainIds(diffIds)
  emit({ type: 'resolved', name: options.name, manifest: image.descriptor.digest, layers: image.layers.length, platform: image.platform })
  // The layers' CIDs, and (inside the daemon) their footers and TOCs opened in the mounter, all at
  // once and while the documents go to containerd: its Prepares come one after the other.
  const urls = layerUrls(source, image, signal, logger)
  const existing = snapshotsExisting(base.snapshots(snapshotter), chain, signal)
  const warming = startWarming(options, image, existing, urls, logger)
  try {
    return await pullResolved(base, options, resolution, image, diffIds, chain, await urls, existing, logger, emit)
  } finally {
    await warming.stop()
  }
}

/** `ipfs://<cid>` of every layer, when the descriptor or the source knows it. */
async function layerUrls (source: PullReader, image: ResolvedImage, signal: AbortSignal | undefined, logger: Logger): Promise<Array<string | undefined>> {
  return await Promise.all(image.layers.map(async (l) => {
    const url = l.urls?.find(u => u.startsWith('ipfs://'))
    if (url != null || source.cidOf == null) return url
    try {
      return `ipfs://${(await source.cidOf(l, signal)).toString()}`
    } catch (err) {
      logger.debug({ err, layer: l.digest }, 'no CID for layer')
      return undefined
    }
  }))
}

/**
 * Which of the chain's snapshots exist, asked all at once when the pull starts (containerd's
 * unpacker asks one layer after the other; each ask is a round trip through containerd to the
 * snapshotter). Settled, never rejected: an error is a snapshot to look at again.
 */
async function snapshotsExisting (sn: ReturnType<ContainerdClient['snapshots']>, chain: string[], signal?: AbortSignal): Promise<Array<boolean | undefined>> {
  return await Promise.all(chain.map(async (c) => await sn.stat(c, { signal }).then(() => true, (err) => isNotFound(err) ? false : undefined)))
}

/**
 * Has the mounter open every layer whose snapshot does not exist yet (footer and TOC), without
 * waiting: each mount waits for its own layer. `stop()` ends the calls still running (they are
 * useless once the pull ended) and waits for them.
 */
function startWarming (options: PullOptions, image: ResolvedImage, existing: Promise<Array<boolean | undefined>>, urls: Promise<Array<string | undefined>>, logger: Logger): { stop: () => Promise<void> } {
  const warm = options.warm
  if (!options.lazy || warm == null) return { stop: async () => {} }
  const ac = new AbortController()
  const onAbort = (): void => ac.abort()
  options.signal?.addEventListener('abort', onAbort, { once: true })
  const started = performance.now()
  const done = (async () => {
    const urlsOf = await urls
    const wanted: Array<{ index: number, layer: WarmLayer }> = []
    image.layers.forEach((l, index) => {
      const cid = urlsOf[index]?.slice('ipfs://'.length)
      const tocDigest = l.annotations?.[LABELS.tocDigest]
      const toc = tocHintOf(l.annotations)
      if (cid != null && tocDigest != null) wanted.push({ index, layer: { cid, tocDigest, size: l.size, ...(toc != null ? { toc } : {}) } })
    })
    if (wanted.length === 0 || ac.signal.aborted) return
    // Not waiting for containerd to say which snapshots exist (a round trip through it to the
    // snapshotter per layer, tens of ms on a busy node): the opens start now, and the one of a
    // layer whose snapshot turns out to exist is called off (nothing will mount it).
    const calls = wanted.map(() => new AbortController())
    void existing.then((exists) => { wanted.forEach((w, j) => { if (exists[w.index] === true) calls[j].abort() }) })
    await Promise.all(wanted.map(async (w, j) => {
      const either = anyOf([ac.signal, calls[j].signal])
      try {
        await warm([w.layer], either.signal)
      } finally {
        either.clear()
      }
    }))
    logger.debug({ layers: wanted.length, ms: Math.round(performance.now() - started) }, 'layers opened ahead')
  })().catch((err: Error) => { logger.debug({ err: err.message }, 'opening layers ahead failed') })
  return {
    stop: async () => {
      ac.abort()
      options.signal?.removeEventListener('abort', onAbort)
      await done
    }
  }
}

async function pullResolved (
  base: ContainerdClient, options: PullOptions, resolution: Awaited<ReturnType<typeof resolveImages>>, image: ResolvedImage,
  diffIds: string[], chain: string[], urlsOf: Array<string | undefined>, existing: Promise<Array<boolean | undefined>>, logger: Logger, emit: (e: PullEvent) => void
): Promise<PullResult> {
  const { snapshotter, signal } = options
  const lease = await base.leases.create({ labels: { 'ipfs-estargz/pull': options.name }, expireMs: DEFAULTS.leaseExpireMs, signal })
  const client = base.withLease(lease.id)
  logger.debug({ lease: lease.id, snapshotter }, 'pull started')
  let bytesWritten = 0
  try {
    // Documents first (children before parents does not matter under a lease). The labels are
    // those containerd's SetChildrenMappedLabels sets: index → selected manifests, manifest →
    // config and layers (also for layers that will stay remote: GC ignores missing children).
    const writeDoc = async (kind: 'index' | 'manifest' | 'config', desc: Descriptor, bytes: Uint8Array, labels: Labels): Promise<void> => {
      const res = await client.content.write(bytes, { expected: { digest: desc.digest, size: desc.size }, labels, signal })
      if (res.existed && Object.keys(labels).length > 0) await client.content.update(desc.digest, labels, undefined, { signal })
      bytesWritten += res.written
      emit({ type: 'content', kind, digest: desc.digest, size: desc.size, written: res.written, existed: res.existed })
    }
    // each references only the children this pull selected
    const selected = new Set([image.descriptor.digest, ...resolution.indexes.map(i => i.descriptor.digest)])
    await Promise.all([
      writeDoc('config', image.manifest.config, image.configBytes, {}),
      writeDoc('manifest', image.descriptor, image.manifestBytes, childGcLabels([image.manifest.config, ...image.layers])),
      ...resolution.indexes.map(async (idx) => { await writeDoc('index', idx.descriptor, idx.bytes, childGcLabels(idx.index.manifests.filter(m => selected.has(m.digest)))) })
    ])

    const layers = await unpackLayers(client, options, image, diffIds, chain, urlsOf, await existing, logger, emit)
    for (const l of layers) bytesWritten += l.bytesWritten

    const top = chain[chain.length - 1] ?? ''
    if (top !== '') {
      await client.content.update(image.manifest.config.digest, { [`${LABELS.gcRefSnapshot}${snapshotter}`]: top }, undefined, { signal })
    }
    const target = plain(resolution.root)
    await client.images.upsert({ name: options.name, labels: {}, target }, { signal })
    emit({ type: 'done', name: options.name, chainId: top, bytesWritten })
    const fellBack = layers.flatMap((l, index) => l.fallbackReason != null ? [{ index: index + 1, reason: l.fallbackReason }] : [])
    const summary = { chainId: top, layers: layers.length, lazy: layers.filter(l => l.lazy).length, bytesWritten }
    // a fallback is a warning: the node did not do what it is for (the layer came whole)
    if (fellBack.length > 0) logger.warn({ ...summary, fellBack }, 'image pulled; layers fell back to download + apply')
    else logger.info(summary, 'image pulled')
    return {
      name: options.name,
      target,
      manifest: plain(image.descriptor),
      config: plain(image.manifest.config),
      platform: image.platform,
      chainId: top,
      layers,
      bytesWritten
    }
  } finally {
    // not under the signal: the lease must go even when the pull was cancelled
    await base.leases.delete(lease.id).catch((err: unknown) => { logger.warn({ err, lease: lease.id }, 'could not delete the pull lease (it expires by itself)') })
  }
}

/** Prepare labels of one layer: inherited annotations, the target ref, and (lazy) where the layer lives. */
function prepareLabels (options: PullOptions, image: ResolvedImage, ctx: PullLayerContext, urlsOf: Array<string | undefined>): Labels {
  const labels: Labels = { ...inheritedLabels(ctx.descriptor.annotations), [LABELS.snapshotRef]: ctx.chainId }
  if (options.lazy) {
    const upper = image.layers.slice(ctx.index)
    const urls = [...new Set([...(ctx.url != null ? [ctx.url] : []), ...(ctx.descriptor.urls ?? [])])]
    if (urls.length > 0) labels[LABELS.remoteUrls] = urls.join(',')
    const toc = ctx.descriptor.annotations?.[LABELS.tocDigest]
    if (toc != null) labels[LABELS.tocDigest] = toc
    labels[LABELS.criImageRef] = options.name
    labels[LABELS.criLayerDigest] = ctx.descriptor.digest
    labels[LABELS.criManifestDigest] = image.descriptor.digest
    labels[LABELS.stargzReference] = options.name
    labels[LABELS.stargzDigest] = ctx.descriptor.digest
    const list = commaListWithinLimit(LABELS.stargzLayers, upper.map(l => l.digest))
    labels[LABELS.stargzLayers] = list
    labels[LABELS.criImageLayers] = commaListWithinLimit(LABELS.criImageLayers, upper.map(l => l.digest))
    // urls of the neighbours the layers list names, so the snapshotter can pre-resolve them
    const listed = list === '' ? 0 : list.split(',').length
    for (let i = 0; i < listed; i++) {
      const u = urlsOf[ctx.index + i]
      if (u != null) labels[`${LABELS.remoteUrls}.${i}`] = u
    }
    if (DEFAULTS.prefetchBytes > 0) labels['containerd.io/snapshot/remote/stargz.prefetch'] = String(DEFAULTS.prefetchBytes)
  }
  return { ...labels, ...options.labelsFor?.(ctx) }
}

async function unpackLayers (
  client: ContainerdClient, options: PullOptions, image: ResolvedImage, diffIds: string[], chain: string[],
  urlsOf: Array<string | undefined>, existed: Array<boolean | undefined>, logger: Logger, emit: (e: PullEvent) => void
): Promise<PulledLayer[]> {
  const { source, signal } = options
  const sn = client.snapshots(options.snapshotter)

  const out: PulledLayer[] = []
  const total = image.layers.length
  for (let i = 0; i < total; i++) {
    signal?.throwIfAborted()
    const desc = image.layers[i]
    const chainId = chain[i]
    const parent = i > 0 ? chain[i - 1] : ''
    const layer: PulledLayer = { digest: desc.digest, diffId: diffIds[i], chainId, lazy: false, existed: false, bytesWritten: 0 }
    const url = urlsOf[i]
    if (url != null) layer.cid = url.slice('ipfs://'.length)
    out.push(layer)
    // Asked again unless the pull's start found it missing: a snapshot made meanwhile by another
    // pull makes the Prepare below answer AlreadyExists, which is checked the same way.
    if (existed[i] !== false) {
      try {
        await sn.stat(chainId, { signal })
        layer.existed = true
        emit({ type: 'layer', index: i, total, digest: desc.digest, chainId, state: 'exists' })
        continue
      } catch (err) {
        if (!isNotFound(err)) throw err
      }
    }
    const ctx: PullLayerContext = { index: i, descriptor: desc, diffId: diffIds[i], chainId }
    if (urlsOf[i] != null) ctx.url = urlsOf[i]
    const labels = prepareLabels(options, image, ctx, urlsOf)

    let key = ''
    let mounts: Mount[] | undefined
    const preparing = performance.now()
    let unavailableSince: number | undefined
    let unavailableRetries = 0
    for (let attempt = 1; attempt <= DEFAULTS.prepareAttempts && mounts == null && !layer.lazy; attempt++) {
      key = unpackKey(chainId)
      try {
        mounts = await sn.prepare(key, parent, labels, { signal })
      } catch (err) {
        // containerd keeps nothing of a Prepare that failed (its transaction is rolled back)
        if (err instanceof UnavailableError && reconnecting(unavailableSince ??= performance.now())) {
          if (unavailableRetries++ === 0) logger.info({ layer: desc.digest, err: err.message }, 'the snapshotter is unavailable (containerd reconnecting to it?): trying again')
          await sleep(DEFAULTS.snapshotterReconnectIntervalMs, undefined, { signal })
          attempt--
          continue
        }
        if (!isAlreadyExists(err)) throw err
        // The snapshotter committed the layer under the target ref itself: a remote snapshot.
        // containerd's unpacker then Stats the chainID to be sure; below the top layer the next
        // Prepare names it as its parent, which containerd checks anyway (a round trip saved
        // per layer), so only the top one is asked.
        if (i < total - 1) {
          layer.lazy = true
          continue
        }
        try {
          await sn.stat(chainId, { signal })
          layer.lazy = true
        } catch (statErr) {
          if (!isNotFound(statErr)) throw statErr
          logger.debug({ key, chainId }, 'extraction snapshot exists but the chainID does not; retrying')
        }
      }
    }
    if (unavailableSince != null && (mounts != null || layer.lazy)) logger.info({ layer: desc.digest, retries: unavailableRetries, ms: Math.round(performance.now() - unavailableSince) }, 'the snapshotter answered again')
    logger.debug({ layer: desc.digest, lazy: layer.lazy, ms: Math.round(performance.now() - preparing) }, 'layer prepared')
    if (layer.lazy) {
      emit({ type: 'layer', index: i, total, digest: desc.digest, chainId, state: 'lazy' })
      continue
    }
    if (mounts == null) throw new BadImageError(`could not prepare an extraction snapshot for layer ${desc.digest} (${chainId}) after ${DEFAULTS.prepareAttempts} attempts`)
    layer.fallbackReason = await fallbackReasonOf(sn, key, options, signal)
    if (options.requireLazy === true) {
      await sn.remove(key).catch(() => {})
      throw new NotLazyError(desc.digest, i, layer.fallbackReason)
    }

    emit({ type: 'layer', index: i, total, digest: desc.digest, chainId, state: 'applying', fallbackReason: layer.fallbackReason })
    try {
      const res = await client.content.write(await source.fetch(desc, signal), { expected: { digest: desc.digest, size: desc.size }, signal })
      layer.bytesWritten = res.written
      emit({ type: 'content', kind: 'layer', digest: desc.digest, size: desc.size, written: res.written, existed: res.existed })
      const applied = await client.diff.apply(plain(desc), mounts, { signal })
      if (applied.digest !== diffIds[i]) throw new DiffIdMismatchError(desc.digest, diffIds[i], applied.digest, "containerd's applied diff")
      try {
        await sn.commit(chainId, key, labels, { signal })
      } catch (err) {
        if (!isAlreadyExists(err)) throw err
        await sn.remove(key).catch(() => {}) // someone else committed the same chain meanwhile
      }
      // as containerd: the uncompressed label only once the apply verified the diffID
      await client.content.update(desc.digest, { [LABELS.uncompressed]: applied.digest }, undefined, { signal })
    } catch (err) {
      await sn.remove(key).catch(() => {})
      throw err
    }
    emit({ type: 'layer', index: i, total, digest: desc.digest, chainId, state: 'applied', fallbackReason: layer.fallbackReason })
  }
  return out
}

/** Whether a Prepare answered Unavailable since `since` (performance.now()) is tried once more. */
function reconnecting (since: number): boolean {
  return performance.now() - since + DEFAULTS.snapshotterReconnectIntervalMs <= DEFAULTS.snapshotterReconnectMs
}

/**
 * Why the snapshotter returned a normal snapshot instead of a lazy one: ours says it in a label
 * of the active snapshot (containerd's Stat shows the snapshotter's labels); another snapshotter,
 * or a pull with lazy layers off, is named instead.
 */
async function fallbackReasonOf (sn: ReturnType<ContainerdClient['snapshots']>, key: string, options: PullOptions, signal?: AbortSignal): Promise<string> {
  if (!options.lazy) return 'lazy layers are off for this pull'
  try {
    const reason = (await sn.stat(key, { signal })).labels[LABELS.fallbackReason]
    if (reason != null && reason !== '') return reason
  } catch (err) {
    if (!isNotFound(err)) throw err
  }
  return `the snapshotter ${JSON.stringify(options.snapshotter)} returned a normal snapshot (it gave no reason)`
}
