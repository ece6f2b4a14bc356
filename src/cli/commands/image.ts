import { Command } from 'commander'
import { TOC_DIGEST_ANNOTATION } from '../../estargz/index.js'
import { DEFAULTS as DAEMON_DEFAULTS } from '../../daemon/index.js'
import { AmbiguousImageError, IpfsImageReader, ImageNotInRepoError, getPin, parseIpfsRef, unpinRoot, type ImageRecord } from '../../ipfs/index.js'
import { createLogger, type LogLevel } from '../../logging.js'
import { resolveImages } from '../../oci/index.js'
import { commandContext } from '../context.js'
import { NoPeerHasCidError, noPeerHasCid, parseNonNegativeInt } from '../errors.js'
import { logLevelOption } from '../options.js'
import { printJson, stdoutIsTTY, writeStdout } from '../output.js'
import { openCommandRepo } from '../repo.js'
import { formatTable } from '../table.js'

interface Flags { repo?: string, logLevel: LogLevel, offline?: boolean, timeout?: number, json?: boolean }

/** How long the image's metadata may take to arrive: `--timeout`, else the daemon's `[ipfs] find_timeout_sec` (or its default). */
export function findTimeoutSec (flag: number | undefined): number {
  return flag ?? commandContext.getStore()?.config?.ipfs.findTimeoutSec ?? DAEMON_DEFAULTS.ipfs.findTimeoutSec
}

function inspectCommand (): Command {
  return new Command('inspect')
    .description('print the index, manifests, configs and per-layer CIDs of an image in IPFS')
    .argument('<cid>', 'root CID (ipfs://CID, /ipfs/CID or CID): an OCI layout directory or a descriptor JSON')
    .option('--repo <dir>', 'repo of the embedded node')
    .option('--offline', 'only use blocks already in the repo')
    .option('--timeout <sec>', `fail with "no peer has CID …" when the image's index, manifest and config have not arrived after this many seconds (default: [ipfs] find_timeout_sec, ${DAEMON_DEFAULTS.ipfs.findTimeoutSec})`, parseNonNegativeInt('--timeout'))
    .addOption(logLevelOption())
    .action(async (ref: string, flags: Flags) => {
      const root = parseIpfsRef(ref)
      const repo = await openCommandRepo(flags.repo, createLogger(flags.logLevel))
      const seconds = findTimeoutSec(flags.timeout)
      const finding = AbortSignal.timeout(seconds * 1000)
      try {
        let source: IpfsImageReader
        let r: Awaited<ReturnType<typeof resolveImages>>
        try {
          source = await IpfsImageReader.open(repo.node.blocks, root, { offline: flags.offline, signal: finding })
          r = await resolveImages(source, { signal: finding })
        } catch (err) {
          if (finding.aborted) throw new NoPeerHasCidError(noPeerHasCid(root.toString(), seconds, repo.node.helia.libp2p.getPeers().length), { cause: err })
          throw err
        }
        const images = []
        for (const img of r.images) {
          images.push({
            platform: img.platform,
            manifest: { ...img.descriptor, cid: (await source.cidOf(img.descriptor)).toString() },
            config: { ...img.manifest.config, cid: (await source.cidOf(img.manifest.config)).toString(), content: img.config },
            layers: await Promise.all(img.layers.map(async l => ({
              digest: l.digest,
              size: l.size,
              mediaType: l.mediaType,
              cid: (await source.cidOf(l)).toString(),
              tocDigest: l.annotations?.[TOC_DIGEST_ANNOTATION]
            })))
          })
        }
        await printJson({ root: source.rootCid.toString(), rootDescriptor: r.root, indexes: r.indexes.map(i => ({ descriptor: i.descriptor, index: i.index })), images })
      } finally {
        await repo.close()
      }
    })
}

/** Bytes as people read them: 1.2 MB, 512 kB. */
export function humanBytes (n: number | undefined): string {
  if (n == null) return '-'
  const units = ['B', 'kB', 'MB', 'GB', 'TB']
  let i = 0
  let v = n
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++ }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`
}

/** The table `image ls` shows on a terminal: one row an image, its source name kept whole (tag included). */
export function imageTable (images: ImageRecord[]): string {
  return formatTable(['ROOT CID', 'NAME', 'TAGS', 'SIZE', 'CREATED'], images.map(i => [
    i.root, i.name, (i.tags ?? []).join(',') || '-', humanBytes(i.size), i.created.replace(/\.\d+Z$/, 'Z')
  ]))
}

function lsCommand (): Command {
  return new Command('ls')
    .description('list the images published in or imported into the repo: a table on a terminal, one JSON line each otherwise or with --json')
    .option('--repo <dir>', 'repo of the embedded node')
    .option('--json', 'one JSON line an image, also on a terminal')
    .addOption(logLevelOption())
    .action(async (flags: Flags) => {
      const repo = await openCommandRepo(flags.repo, createLogger(flags.logLevel))
      try {
        const images = repo.index.images.list()
        if (flags.json !== true && stdoutIsTTY()) await writeStdout(imageTable(images))
        else for (const img of images) await printJson(img)
      } finally {
        await repo.close()
      }
    })
}

function rmCommand (): Command {
  return new Command('rm')
    .description('remove an image: unpinned and unlisted (its tags too); its blocks stay until `gc`')
    .argument('<image>', 'root CID (ipfs://CID, /ipfs/CID or CID), NAME:TAG given with `tag`, or the name it was pushed or imported as')
    .option('--repo <dir>', 'repo of the embedded node')
    .addOption(logLevelOption())
    .action(async (ref: string, flags: Flags) => {
      const repo = await openCommandRepo(flags.repo, createLogger(flags.logLevel))
      try {
        const roots = repo.index.images.find(ref)
        if (roots.length > 1) throw new AmbiguousImageError(ref, roots)
        if (roots.length === 1) {
          await repo.index.images.remove(roots[0])
          await printJson({ root: roots[0], removed: true })
          return
        }
        // not listed: a pulled or mounted image is only pinned
        let cid
        try { cid = parseIpfsRef(ref) } catch { throw new ImageNotInRepoError(ref) }
        const components = { pins: repo.index.pins, localBlockstore: repo.node.localBlockstore }
        if (await getPin(components, cid) == null) throw new ImageNotInRepoError(ref)
        await unpinRoot(components, cid)
        await printJson({ root: cid.toString(), removed: true })
      } finally {
        await repo.close()
      }
    })
}

export function imageCommand (): Command {
  return new Command('image')
    .description('inspect, list and remove images in IPFS')
    .addCommand(inspectCommand())
    .addCommand(lsCommand())
    .addCommand(rmCommand())
}
