import { Command } from 'commander'
import { convertImage } from '../../convert/index.js'
import { createLogger } from '../../logging.js'
import { chunkSizeOption, levelOption, logLevelOption } from '../options.js'
import { convertAndPublish, type PublishFlags } from '../publish.js'

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
    .action(async (sourceRef: string, flags: PublishFlags) => {
      const logger = createLogger(flags.logLevel)
      await convertAndPublish(sourceRef, flags, logger, {
        tmpPrefix: 'ipfs-estargz-push-',
        convert: async (ctx) => ({
          conversion: await convertImage(ctx.source, ctx.publishers, {
            platform: ctx.platform, chunkSize: flags.chunkSize, compressionLevel: flags.level, name: sourceRef, tmpDir: ctx.tmpDir, signal: ctx.signal, logger, onProgress: ctx.onProgress
          }),
          extra: undefined
        })
      })
    })
}
