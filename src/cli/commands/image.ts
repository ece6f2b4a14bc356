import { Command } from 'commander'
import { TOC_DIGEST_ANNOTATION } from '../../estargz/index.js'
import { AmbiguousImageError, IpfsImageReader, ImageNotInRepoError, getPin, parseIpfsRef, unpinRoot } from '../../ipfs/index.js'
import { createLogger, type LogLevel } from '../../logging.js'
import { resolveImages } from '../../oci/index.js'
import { logLevelOption } from '../options.js'
import { printJson } from '../output.js'
import { openCommandRepo } from '../repo.js'

interface Flags { repo?: string, logLevel: LogLevel, offline?: boolean }

function inspectCommand (): Command {
  return new Command('inspect')
    .description('print the index, manifests, configs and per-layer CIDs of an image in IPFS')
    .argument('<cid>', 'root CID (ipfs://CID, /ipfs/CID or CID): an OCI layout directory or a descriptor JSON')
    .option('--repo <dir>', 'repo of the embedded node')
    .option('--offline', 'only use blocks already in the repo')
    .addOption(logLevelOption())
    .action(async (ref: string, flags: Flags) => {
      const repo = await openCommandRepo(flags.repo, createLogger(flags.logLevel))
      try {
        const source = await IpfsImageReader.open(repo.node.blocks, ref, { offline: flags.offline })
        const r = await resolveImages(source)
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

function lsCommand (): Command {
  return new Command('ls')
    .description('list the images published in or imported into the repo, one JSON line each')
    .option('--repo <dir>', 'repo of the embedded node')
    .addOption(logLevelOption())
    .action(async (flags: Flags) => {
      const repo = await openCommandRepo(flags.repo, createLogger(flags.logLevel))
      try {
        for (const img of repo.index.images.list()) await printJson(img)
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
        const components = { pins: repo.node.helia.pins, localBlockstore: repo.node.localBlockstore }
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
