import { join } from 'node:path'
import { convertImage, LayoutPublisher, type BlobPublisher, type ConversionResult, type ConvertOptions } from '../convert/index.js'
import type { Logger, LogLevel } from '../logging.js'
import { hostPlatform, platformMatches, resolveImages, type ImageReader, type ResolvedImage } from '../oci/index.js'
import { DEFAULTS } from './config.js'
import { NoRunnableImageError, NothingRecordedError } from './errors.js'
import { listLayerEntries, mergedView, type LayerEntry } from './layer-files.js'
import { expandPrefetchList, type PrefetchPattern } from './prefetch-list.js'
import { prioritizedFilesByLayer, type RecordEntry } from './record.js'
import { runInSandbox, type SandboxResult, type SandboxRuntime } from './sandbox.js'
import { workloadOf, type WorkloadOverrides } from './workload.js'

/** Where the accesses come from: a run of the workload, a record, or a prefetch list. */
export type Profile =
  | { kind: 'run', workload: WorkloadOverrides, periodMs: number }
  | { kind: 'record', entries: RecordEntry[] }
  | { kind: 'list', patterns: PrefetchPattern[], name?: string }

export interface OptimizeComponents {
  logger: Logger
  /** The workload's stdout and stderr. */
  output?: (text: string) => void
}

export interface OptimizeOptions extends ConvertOptions {
  profile: Profile
  scratchBytes?: number
  /** How the workload is isolated (default `auto`: runc when installed, else namespaces and a chroot). */
  sandbox?: SandboxRuntime
  /** Log level of the sandbox process. */
  logLevel?: LogLevel
}

export interface OptimizeResult {
  conversion: ConversionResult
  /** The accesses the layers were rebuilt from (what `--record-out` writes). */
  record: RecordEntry[]
  /** Prioritized files per source layer digest. */
  prioritized: Map<string, string[]>
  /** How the workload ended, when it was run. */
  run?: SandboxResult
  /** Accesses left out of the record because it was full. */
  droppedAccesses?: number
  /** Globs of the prefetch list that matched nothing. */
  unmatched?: PrefetchPattern[]
}

/** The image of `images` this machine can run: the only one, or the first for its platform. */
function runnable (images: ResolvedImage[], name: string): ResolvedImage {
  const host = hostPlatform()
  const img = images.find(i => platformMatches(i.platform, host))
  if (img == null) throw new NoRunnableImageError(`${name} has no image for this machine (${host.os}/${host.architecture}); its workload cannot run here (give --record-in or --prefetch-list)`)
  return img
}

/**
 * Converts a copy of `image` to eStargz (fast gzip level, never published), mounts its layers
 * lazily in a sandbox, runs the workload and records the first access of each file per layer.
 */
async function profileRun (components: OptimizeComponents, source: ImageReader, image: ResolvedImage, options: OptimizeOptions & { profile: { kind: 'run' } }): Promise<{ entries: RecordEntry[], run: SandboxResult, dropped: number }> {
  const workload = workloadOf(image.config.config, options.profile.workload)
  const layoutDir = join(options.tmpDir, 'profile')
  const layout = await LayoutPublisher.open(layoutDir)
  let copy: ConversionResult
  try {
    copy = await convertImage(source, [layout], {
      ...options, layerOptions: undefined, platform: image.platform, compressionLevel: DEFAULTS.profileLevel
    })
  } catch (err) {
    await layout.abort().catch(() => {})
    throw err
  }
  const layers = copy.images[0].layers.map(l => ({ blob: join(layoutDir, 'blobs', 'sha256', l.descriptor.digest.slice('sha256:'.length)), tocDigest: l.tocDigest }))
  const r = await runInSandbox({ logger: components.logger, output: components.output }, layers, workload, {
    manifestDigest: image.descriptor.digest, periodMs: options.profile.periodMs, tmpDir: options.tmpDir, scratchBytes: options.scratchBytes, runtime: options.sandbox, logLevel: options.logLevel, signal: options.signal
  })
  return { entries: r.entries, run: r.result, dropped: r.dropped }
}

/**
 * Workload-optimized eStargz (what `ctr-remote image optimize` makes): the files the workload
 * reads first are placed at the front of the layer holding them, in access order, followed by
 * `.prefetch.landmark`, so a lazy runtime fetches them before the container starts. Accesses
 * come from a run of the image's workload in a sandbox, from a record of an earlier run, or from
 * a prefetch list. A layer with no access starts with `.no.prefetch.landmark`; one that already
 * is eStargz without a `.prefetch.landmark` is kept as it is (another workload's prefetch list
 * would make runtimes fetch what this one never reads, so such a layer is rebuilt).
 */
export async function optimizeImage (components: OptimizeComponents, source: ImageReader, publishers: BlobPublisher[], options: OptimizeOptions): Promise<OptimizeResult> {
  const resolution = await resolveImages(source, { platform: options.platform, signal: options.signal })
  const images = resolution.images
  const p = options.profile
  let record: RecordEntry[]
  const out: Partial<OptimizeResult> = {}
  if (p.kind === 'record') {
    record = p.entries
  } else if (p.kind === 'list') {
    const image = runnable(images, source.name)
    const diffIDs = image.config.rootfs.diff_ids
    const entries: LayerEntry[][] = []
    for (let i = 0; i < image.layers.length; i++) entries.push(await listLayerEntries(source, image.layers[i], diffIDs[i], options.signal))
    const expanded = expandPrefetchList(p.patterns, mergedView(entries), image.descriptor.digest, p.name)
    record = expanded.entries
    out.unmatched = expanded.unmatched
  } else {
    const image = runnable(images, source.name)
    const r = await profileRun(components, source, image, { ...options, profile: p })
    if (r.entries.length === 0) {
      const how = r.run.stopped ? 'was stopped' : r.run.exitCode != null ? `exited with code ${r.run.exitCode}` : `was killed by ${String(r.run.signal)}`
      throw new NothingRecordedError(`the workload opened no file of the image (it ${how}; its output above says why it did not start)`)
    }
    record = r.entries
    out.run = r.run
    out.droppedAccesses = r.dropped
  }
  const prioritized = prioritizedFilesByLayer(record, images.map(i => ({ manifestDigest: i.descriptor.digest, layers: i.layers })))
  const conversion = await convertImage(source, publishers, {
    ...options,
    layerOptions: (desc) => ({
      prioritizedFiles: prioritized.get(desc.digest),
      reusable: (reader) => reader.tree.prefetchOffset == null
    })
  })
  return { ...out, conversion, record, prioritized }
}
