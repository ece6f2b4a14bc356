import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { IpfsPublisher, LayoutPublisher, type BlobPublisher, type ConversionResult, type ConvertedLayer, type ConvertProgress } from '../convert/index.js'
import type { Logger, LogLevel } from '../logging.js'
import {
  imageFromReader, openImageReader, openOciLayout, parseImageReference, parsePlatform, pushImage, registryCopy, resolveImages,
  type ImageReader, type Platform, type RegistryClientOptions
} from '../oci/index.js'
import { cancelOn } from './context.js'
import { UsageError } from './errors.js'
import { printJson, writeStdout } from './output.js'
import { LayerProgress } from './progress.js'
import { openCommandRepo } from './repo.js'

/** The flags every command that converts and publishes an image shares (push, optimize). */
export interface PublishFlags {
  repo?: string
  platform?: string
  output?: string
  to?: string
  json?: boolean
  kuboCompatible?: boolean
  chunkSize: number
  level: number
  plainHttp?: boolean
  creds?: string
  ipfs: boolean
  logLevel: LogLevel
}

export function registryOptions (flags: Pick<PublishFlags, 'plainHttp' | 'creds'>): RegistryClientOptions {
  const o: RegistryClientOptions = { plainHttp: flags.plainHttp === true }
  if (flags.creds != null) {
    const i = flags.creds.indexOf(':')
    if (i < 0) throw new UsageError('--creds must be USER:PASSWORD')
    o.credentials = { username: flags.creds.slice(0, i), password: flags.creds.slice(i + 1) }
  }
  return o
}

/** What a command's conversion step is given. */
export interface ConversionContext {
  source: ImageReader
  publishers: BlobPublisher[]
  platform?: Platform
  tmpDir: string
  signal: AbortSignal
  logger: Logger
  onProgress: (p: ConvertProgress) => void
}

export interface PublishSteps<T> {
  /** Prefix of the command's temp dir under $TMPDIR. */
  tmpPrefix: string
  /** Converts the image into the publishers; `extra` is the command's own result. */
  convert: (ctx: ConversionContext) => Promise<{ conversion: ConversionResult, extra: T }>
  /** Runs after the conversion, before the registry push and the output (reports, record files). */
  afterConvert?: (extra: T) => Promise<void>
  /** Fields the command adds to `--json`'s top level and to each layer. */
  json?: { top?: (extra: T) => Record<string, unknown>, layer?: (layer: ConvertedLayer, extra: T) => Record<string, unknown> }
}

/**
 * Converts an image and publishes it to every output the flags name (IPFS, `--output oci:DIR`,
 * `--to docker://…`), then prints the root CID (or, without IPFS, the root digest) or `--json`.
 * On failure or Ctrl-C every publisher is aborted, so nothing is listed; the source, the repo, the
 * temp dir and the signal handler are released on every path (the daemon runs this too).
 */
export async function convertAndPublish<T> (sourceRef: string, flags: PublishFlags, logger: Logger, steps: PublishSteps<T>): Promise<void> {
  const ref = parseImageReference(sourceRef)
  if (flags.output != null && !flags.output.startsWith('oci:')) throw new UsageError('--output must be oci:DIR')
  const target = flags.to != null ? parseImageReference(flags.to) : undefined
  if (target != null && target.transport !== 'docker') throw new UsageError('--to must be docker://HOST/REPO[:TAG]')
  if (!flags.ipfs && flags.output == null && target == null) throw new UsageError('--no-ipfs needs --output or --to')
  const platform = flags.platform != null ? parsePlatform(flags.platform) : undefined

  const ac = new AbortController()
  const source = await openImageReader(ref, registryOptions(flags))
  let repo: Awaited<ReturnType<typeof openCommandRepo>> | undefined
  try {
    repo = flags.ipfs ? await openCommandRepo(flags.repo, logger, { create: true }) : undefined
  } catch (err) {
    await source.close().catch(() => {})
    throw err
  }
  // Nothing above may leave a temp dir or a signal handler behind.
  const tmp = await mkdtemp(join(tmpdir(), steps.tmpPrefix))
  const stopListening = cancelOn(ac)
  const publishers: BlobPublisher[] = []
  const progress = new LayerProgress()
  let ok = false
  try {
    const ipfs = repo != null ? new IpfsPublisher(repo.node, repo.index, { kuboCompatible: flags.kuboCompatible }) : undefined
    if (ipfs != null) publishers.push(ipfs)
    // --to goes through an OCI layout: the registry pusher reads it like any other source.
    const layoutDir = flags.output?.slice('oci:'.length) ?? (target != null ? join(tmp, 'layout') : undefined)
    if (layoutDir != null) publishers.push(await LayoutPublisher.open(layoutDir))
    const { conversion: result, extra } = await steps.convert({ source, publishers, platform, tmpDir: tmp, signal: ac.signal, logger, onProgress: progress.onProgress })
    progress.stop()
    await steps.afterConvert?.(extra)
    let pushedDigest: string | undefined
    if (target?.transport === 'docker' && layoutDir != null) {
      const converted = await openOciLayout(layoutDir)
      try {
        const r = await resolveImages(converted, { signal: ac.signal })
        // Registries refuse ipfs:// URLs: their copy carries the CIDs as annotations instead,
        // so its manifests (and the root digest) differ from the IPFS copy's (docs/mirror.md).
        pushedDigest = (await pushImage(target, registryCopy(imageFromReader(converted, r)), { ...registryOptions(flags), signal: ac.signal, logger })).digest
      } finally {
        await converted.close()
      }
    }
    const image = ipfs?.image
    if (flags.json === true) {
      await printJson({
        root: image?.root.toString(),
        descriptor: image?.descriptor.toString(),
        rootDigest: result.root.digest,
        mediaType: result.root.mediaType,
        ...(pushedDigest != null ? { registryDigest: pushedDigest } : {}),
        ...steps.json?.top?.(extra),
        images: result.images.map(i => ({
          platform: i.platform,
          manifest: { digest: i.manifest.digest, cid: image?.blobs.get(i.manifest.digest)?.toString() },
          config: { digest: i.config.digest, cid: image?.blobs.get(i.config.digest)?.toString() },
          layers: i.layers.map(l => ({
            digest: l.descriptor.digest,
            cid: image?.blobs.get(l.descriptor.digest)?.toString(),
            tocDigest: l.tocDigest,
            diffID: l.diffID,
            size: l.descriptor.size,
            uncompressedSize: l.uncompressedSize,
            source: l.source.digest,
            reused: l.reused,
            ...steps.json?.layer?.(l, extra)
          }))
        }))
      })
    } else if (image != null) {
      await writeStdout(`${image.root.toString()}\n`)
    } else {
      await writeStdout(`${result.root.digest}\n`)
    }
    ok = true
  } finally {
    progress.stop()
    stopListening()
    if (!ok) for (const p of publishers) await p.abort().catch(() => {})
    await source.close().catch(() => {})
    await repo?.close()
    await rm(tmp, { recursive: true, force: true })
  }
}
