import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Command } from 'commander'
import { convertImage, IpfsPublisher, LayoutPublisher, type BlobPublisher } from '../../convert/index.js'
import { createLogger, type LogLevel } from '../../logging.js'
import {
  imageFromReader, openImageReader, openOciLayout, parseImageReference, parsePlatform, pushImage, resolveImages,
  type RegistryClientOptions
} from '../../oci/index.js'
import { cancelOn } from '../context.js'
import { UsageError } from '../errors.js'
import { chunkSizeOption, levelOption, logLevelOption } from '../options.js'
import { printJson, writeStdout } from '../output.js'
import { LayerProgress } from '../progress.js'
import { openCommandRepo } from '../repo.js'

interface PushFlags {
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

export function registryOptions (flags: Pick<PushFlags, 'plainHttp' | 'creds'>): RegistryClientOptions {
  const o: RegistryClientOptions = { plainHttp: flags.plainHttp === true }
  if (flags.creds != null) {
    const i = flags.creds.indexOf(':')
    if (i < 0) throw new UsageError('--creds must be USER:PASSWORD')
    o.credentials = { username: flags.creds.slice(0, i), password: flags.creds.slice(i + 1) }
  }
  return o
}

export function pushCommand (): Command {
  return new Command('push')
    .description('convert an image to eStargz and publish it to IPFS through the embedded Helia node; prints the root CID')
    .argument('<source>', 'oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE or docker://HOST/REPO[:TAG]')
    .option('--repo <dir>', 'repo of the embedded node (default $IPFS_ESTARGZ_PATH or ~/.ipfs-estargz)')
    .option('--platform <os/arch>', 'only this platform of a multi-platform image (default: all)')
    .option('--output <oci:DIR>', 'also write the converted image as an OCI layout')
    .option('--to <docker://HOST/REPO:TAG>', 'also push the converted image to a registry')
    .option('--no-ipfs', 'do not publish to IPFS (with --output or --to)')
    .option('--json', 'print every CID: root, descriptor, manifests, configs, layers with TOC digests')
    .option('--kubo-compatible', 'fixed 256 KiB leaves, 174 links per node: the CIDs `ipfs add --cid-version=1` gives')
    .addOption(chunkSizeOption('eStargz chunk size'))
    .addOption(levelOption('gzip level 0-9'))
    .option('--plain-http', 'talk HTTP, not HTTPS, to registries (loopback registries)')
    .option('--creds <user:password>', 'registry credentials (default: ~/.docker/config.json)')
    .addOption(logLevelOption())
    .action(async (sourceRef: string, flags: PushFlags) => {
      const logger = createLogger(flags.logLevel)
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
        repo = flags.ipfs ? await openCommandRepo(flags.repo, logger) : undefined
      } catch (err) {
        await source.close().catch(() => {})
        throw err
      }
      // Nothing above may leave a temp dir or a signal handler behind (the daemon runs this too).
      const tmp = await mkdtemp(join(tmpdir(), 'ipfs-estargz-push-'))
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
        const result = await convertImage(source, publishers, {
          platform, chunkSize: flags.chunkSize, compressionLevel: flags.level, name: sourceRef, tmpDir: tmp, signal: ac.signal, logger, onProgress: progress.onProgress
        })
        progress.stop()
        if (target?.transport === 'docker' && layoutDir != null) {
          const converted = await openOciLayout(layoutDir)
          try {
            const r = await resolveImages(converted, { signal: ac.signal })
            await pushImage(target, imageFromReader(converted, r), { ...registryOptions(flags), signal: ac.signal, logger })
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
                reused: l.reused
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
    })
}
