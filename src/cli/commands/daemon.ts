import { Command } from 'commander'
import { containerdConfigSnippet } from '../../containerd/index.js'
import { DEFAULTS, Daemon, apiAddressFor, loadConfig, type DaemonConfig } from '../../daemon/index.js'
import { createLogger, type LogLevel } from '../../logging.js'
import type { CommandContext } from '../context.js'
import { DEFAULTS as CLI_DEFAULTS, collect, logLevelOption } from '../options.js'
import { printJson, writeStdout } from '../output.js'
import { openCommandRepo } from '../repo.js'

type RunCli = (argv: string[], ctx?: CommandContext) => Promise<number>

interface DaemonFlags {
  config?: string
  root?: string
  address?: string
  apiAddress?: string
  listen: string[]
  peer: string[]
  logLevel?: LogLevel
}

export function daemonCommand (runCli: RunCli): Command {
  const daemon = new Command('daemon')
    .description('run the node: Helia + libp2p, lazy FUSE mounts, the containerd snapshotter socket and the control API')
    .option('--config <file>', `TOML configuration (default ${DEFAULTS.config}, if present)`)
    .option('--root <dir>', `state and repo of the daemon (default ${DEFAULTS.root})`)
    .option('--address <sock>', `snapshotter socket for containerd (default ${DEFAULTS.address})`)
    .option('--api-address <sock>', 'control socket the CLI uses (default: api.sock next to --address)')
    .option('--listen <multiaddr>', 'listen for peers on this multiaddr (repeatable)', collect, [])
    .option('--peer <multiaddr>', 'peer to keep connected (repeatable)', collect, [])
    .addOption(logLevelOption({ service: true })) // default: the configuration's
    .action(async (flags: DaemonFlags) => {
      const config: DaemonConfig = await loadConfig(flags.config)
      if (flags.root != null) config.root = flags.root
      if (flags.address != null) config.address = flags.address
      if (flags.apiAddress != null) config.apiAddress = flags.apiAddress
      if (flags.listen.length > 0) config.ipfs.listen = flags.listen
      if (flags.peer.length > 0) config.ipfs.peers = flags.peer
      if (flags.logLevel != null) config.logLevel = flags.logLevel
      const logger = createLogger(config.logLevel as LogLevel)
      const d = new Daemon({
        logger,
        runCommand: async (argv, io) => await runCli(argv, { stdout: io.stdout, stderr: io.stderr, repo: io.repo, signal: io.signal, ...(io.warmLayers != null ? { warmLayers: io.warmLayers } : {}) })
      }, config)
      await d.start()
      process.stderr.write(`ipfs-estargz daemon: snapshotter on ${config.address}, control API on ${apiAddressFor(config)}, repo ${config.root}\n`)
      await new Promise<void>(resolve => {
        process.once('SIGTERM', resolve)
        process.once('SIGINT', resolve)
      })
      logger.info('stopping')
      await d.stop()
    })
  return daemon
}

export function idCommand (): Command {
  return new Command('id')
    .description('print the node\'s peer id and the multiaddrs peers can dial (the running daemon\'s, when one owns the repo)')
    .option('--repo <dir>', 'repo (or daemon root)')
    .action(async (flags: { repo?: string }) => {
      const repo = await openCommandRepo(flags.repo, createLogger(CLI_DEFAULTS.commandLogLevel))
      try {
        await printJson({ id: repo.node.peerId.toString(), addresses: repo.node.multiaddrs().map(String) })
      } finally {
        await repo.close()
      }
    })
}

export function containerdConfigCommand (): Command {
  return new Command('containerd-config')
    .description('print the containerd configuration snippet that registers ipfs-estargz as a proxy snapshotter')
    .option('--address <sock>', 'snapshotter socket', DEFAULTS.address)
    .option('--no-cri', 'leave out the Kubernetes (CRI) settings')
    .action(async (flags: { address: string, cri: boolean }) => {
      await writeStdout(containerdConfigSnippet({ address: flags.address, cri: flags.cri }))
    })
}
