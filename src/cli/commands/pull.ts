import { Command } from 'commander'
import { CLIENT_DEFAULTS as CONTAINERD_DEFAULTS, CONFIG_DEFAULTS as CONTAINERD_CONFIG_DEFAULTS, ContainerdClient, pullImage, type PullEvent } from '../../containerd/index.js'
import { IpfsImageReader, parseIpfsRef, pinRoot, unpinRoot } from '../../ipfs/index.js'
import { createLogger, type LogLevel } from '../../logging.js'
import { parsePlatform } from '../../oci/index.js'
import { cancelOn, commandContext } from '../context.js'
import { logLevelOption } from '../options.js'
import { printJson, writeStderr, writeStdout } from '../output.js'
import { openCommandRepo } from '../repo.js'

interface PullFlags {
  repo?: string
  address: string
  namespace: string
  name?: string
  snapshotter: string
  platform?: string
  lazy: boolean
  requireLazy?: boolean
  json?: boolean
  logLevel: LogLevel
}

/**
 * One line per layer on stderr, always: whether it is lazy, or fell back to a download (and
 * why). A terminal also gets the steps in between.
 */
function progress (e: PullEvent, tty: boolean): string | undefined {
  if (e.type !== 'layer') return tty && e.type === 'done' ? 'done' : undefined
  const head = `layer ${e.index + 1}/${e.total} ${e.digest.slice(7, 19)}`
  switch (e.state) {
    case 'lazy': return `${head}: lazy`
    case 'exists': return `${head}: already unpacked`
    case 'applying': return `${head}: fell back to download + apply: ${e.fallbackReason ?? 'no reason given'}`
    case 'applied': return tty ? `${head}: applied` : undefined
  }
}

export function pullCommand (): Command {
  return new Command('pull')
    .description('pull an image from IPFS into containerd; layers are mounted lazily by the ipfs-estargz snapshotter, so nothing but footers and TOCs is downloaded')
    .argument('<ref>', 'ipfs://CID, /ipfs/CID or a bare CID (an image root or descriptor JSON)')
    .option('--repo <dir>', 'repo of the node (the daemon\'s root while it runs)')
    .option('--address <sock>', 'containerd socket', CONTAINERD_DEFAULTS.address)
    .option('--namespace <ns>', 'containerd namespace', CONTAINERD_DEFAULTS.namespace)
    .option('--name <name>', 'image name in containerd (default ipfs://CID)')
    .option('--snapshotter <name>', 'snapshotter to unpack into', CONTAINERD_CONFIG_DEFAULTS.name)
    .option('--platform <os/arch>', 'image of a multi-platform index (default: this machine\'s)')
    .option('--no-lazy', 'download and apply every layer (a full pull), even with a lazy snapshotter')
    .option('--require-lazy', 'fail (ERR_LAYER_NOT_LAZY) as soon as a layer cannot be mounted lazily, instead of downloading it')
    .option('--json', 'print the result as JSON')
    .addOption(logLevelOption())
    .action(async (ref: string, flags: PullFlags) => {
      const logger = createLogger(flags.logLevel)
      const repo = await openCommandRepo(flags.repo, logger, { create: true })
      const client = ContainerdClient.create({ address: flags.address, namespace: flags.namespace })
      const ac = new AbortController()
      const stopListening = cancelOn(ac)
      try {
        // with the DHT: connect to who holds the image before its first block is asked for
        await repo.node.discovery.connectProviders(parseIpfsRef(ref), { signal: ac.signal })
        const source = await IpfsImageReader.open(repo.node.blocks, ref, { signal: ac.signal })
        const tty = process.stderr.isTTY
        const name = flags.name ?? `ipfs://${source.rootCid.toString()}`
        // kept from garbage collection: what of the image is stored here, now and as it is read.
        // Pinned before containerd lists the image: a crash in between leaves a pin (`image rm`
        // drops it), never a listed image whose blocks a collection may take.
        const pins = { pins: repo.index.pins, localBlockstore: repo.node.localBlockstore }
        const pinnedNow = await pinRoot(pins, source.rootCid, { lazy: true, metadata: { name }, signal: ac.signal })
        // inside the daemon: the FUSE manager opens every layer at once, before the Prepares
        const warm = commandContext.getStore()?.warmLayers
        const result = await pullImage({
          client,
          source,
          name,
          snapshotter: flags.snapshotter,
          platform: flags.platform != null ? parsePlatform(flags.platform) : undefined,
          namespace: flags.namespace,
          lazy: flags.lazy,
          requireLazy: flags.requireLazy === true,
          ...(warm != null ? { warm } : {}),
          signal: ac.signal,
          logger,
          onProgress: (e) => {
            const line = progress(e, tty)
            if (line != null) writeStderr(`${line}\n`)
          }
        }).catch(async (err: unknown) => {
          // a failed pull keeps no pin of its own (one made before by another command stays)
          if (pinnedNow) await unpinRoot(pins, source.rootCid).catch((e: Error) => { logger.warn({ err: e.message }, 'could not drop the pin of the failed pull') })
          throw err
        })
        // CRI asks for layers by digest only: remember where each one lives.
        for (const l of result.layers) if (l.cid != null) repo.index.digests.put(l.digest, l.cid)
        if (flags.json === true) await printJson(result)
        else await writeStdout(`${result.name}\n`)
      } finally {
        stopListening()
        client.close()
        await repo.close()
      }
    })
}
