import { Command, Option } from 'commander'
import { ContainerdClient, pullImage, type PullEvent } from '../../containerd/index.js'
import { IpfsImageSource } from '../../image/ipfs-image.js'
import { createLogger, type LogLevel } from '../../logging.js'
import { parsePlatform } from '../../oci/index.js'
import { cancelOn } from '../context.js'
import { printJson, writeStderr, writeStdout } from '../output.js'
import { openRepo } from '../repo.js'

interface PullFlags {
  repo?: string
  address: string
  namespace: string
  name?: string
  snapshotter: string
  platform?: string
  lazy: boolean
  json?: boolean
  logLevel: LogLevel
}

/** One line per step on a terminal; nothing on a pipe (or inside the daemon, where stderr is the caller's). */
function progress (e: PullEvent): string | undefined {
  switch (e.type) {
    case 'layer': return `${e.digest.slice(7, 19)}  ${e.state}`
    case 'done': return 'done'
    default: return undefined
  }
}

export function pullCommand (): Command {
  return new Command('pull')
    .description('pull an image from IPFS into containerd; layers are mounted lazily by the ipfs-estargz snapshotter, so nothing but footers and TOCs is downloaded')
    .argument('<ref>', 'ipfs://CID, /ipfs/CID or a bare CID (an image root or descriptor JSON)')
    .option('--repo <dir>', 'repo of the node (the daemon\'s root while it runs)')
    .option('--address <sock>', 'containerd socket', '/run/containerd/containerd.sock')
    .option('--namespace <ns>', 'containerd namespace', 'default')
    .option('--name <name>', 'image name in containerd (default ipfs://CID)')
    .option('--snapshotter <name>', 'snapshotter to unpack into', 'ipfs-estargz')
    .option('--platform <os/arch>', 'image of a multi-platform index (default: this machine\'s)')
    .option('--no-lazy', 'download and apply every layer (a full pull), even with a lazy snapshotter')
    .option('--json', 'print the result as JSON')
    .addOption(new Option('--log-level <level>', 'log level on stderr').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('warn'))
    .action(async (ref: string, flags: PullFlags) => {
      const logger = createLogger(flags.logLevel)
      const repo = await openRepo(flags.repo, logger)
      const client = ContainerdClient.create({ address: flags.address, namespace: flags.namespace })
      const ac = new AbortController()
      const stopListening = cancelOn(ac)
      try {
        const source = await IpfsImageSource.open(repo.node.blocks, ref, { signal: ac.signal })
        const tty = process.stderr.isTTY
        const result = await pullImage({
          client,
          source,
          name: flags.name ?? `ipfs://${source.rootCid.toString()}`,
          snapshotter: flags.snapshotter,
          platform: flags.platform != null ? parsePlatform(flags.platform) : undefined,
          namespace: flags.namespace,
          lazy: flags.lazy,
          signal: ac.signal,
          logger,
          onProgress: (e) => {
            const line = tty ? progress(e) : undefined
            if (line != null) writeStderr(`${line}\n`)
          }
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
