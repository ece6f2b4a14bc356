import { readFile } from 'node:fs/promises'
import { Command, Option } from 'commander'
import { containerdConfigSnippet, containerdDropIn, mergeContainerdConfig, type ContainerdMajor } from '../../containerd/index.js'
import { DEFAULTS, Daemon, apiAddressFor, loadConfig, sdNotifier, type DaemonConfig } from '../../daemon/index.js'
import { createLogger, type LogLevel } from '../../logging.js'
import { DEFAULTS as MIRROR_DEFAULTS, hostsToml, parseAddress } from '../../mirror/index.js'
import type { CommandContext } from '../context.js'
import { UsageError } from '../errors.js'
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
  mirror?: string | boolean
  httpAddress?: string
}

/** `preload` loads, once the daemon serves, what a client's command a container start waits on needs. */
export function daemonCommand (runCli: RunCli, preload?: () => Promise<void>): Command {
  const daemon = new Command('daemon')
    .description('run the node: Helia + libp2p, lazy FUSE mounts, the containerd snapshotter socket and the control API')
    .option('--config <file>', `TOML configuration (default ${DEFAULTS.config}, if present)`)
    .option('--root <dir>', `state and repo of the daemon (default ${DEFAULTS.root})`)
    .option('--address <sock>', `snapshotter socket for containerd (default ${DEFAULTS.address})`)
    .option('--api-address <sock>', 'control socket the CLI uses (default: api.sock next to --address)')
    .option('--listen <multiaddr>', 'listen for peers on this multiaddr (repeatable)', collect, [])
    .option('--peer <multiaddr>', 'peer to keep connected (repeatable)', collect, [])
    .option('--mirror [host:port]', `mirror mode: serve the registry API and trustless gateway over HTTP (default ${MIRROR_DEFAULTS.address}, or [mirror] address)`)
    .option('--http-address <host:port>', `monitoring listener for /metrics and /healthz (default ${DEFAULTS.http.address}, or [http] address; "" for none)`)
    .addOption(logLevelOption({ service: true })) // default: the configuration's
    .action(async (flags: DaemonFlags) => {
      const config: DaemonConfig = await loadConfig(flags.config)
      if (flags.root != null) config.root = flags.root
      if (flags.address != null) config.address = flags.address
      if (flags.apiAddress != null) config.apiAddress = flags.apiAddress
      if (flags.listen.length > 0) config.ipfs.listen = flags.listen
      if (flags.peer.length > 0) config.ipfs.peers = flags.peer
      if (flags.logLevel != null) config.logLevel = flags.logLevel
      if (flags.httpAddress != null) config.http.address = flags.httpAddress
      if (flags.mirror != null && flags.mirror !== false) {
        config.mirror.enable = true
        if (typeof flags.mirror === 'string') config.mirror.address = flags.mirror
      }
      const logger = createLogger(config.logLevel as LogLevel)
      const notify = sdNotifier({ logger }) // before anything is spawned: children must not inherit $NOTIFY_SOCKET
      const d = new Daemon({
        logger,
        runCommand: async (argv, io) => await runCli(argv, { stdout: io.stdout, stderr: io.stderr, stdoutIsTTY: io.stdoutIsTTY, stderrIsTTY: io.stderrIsTTY, config, repo: io.repo, signal: io.signal, layerStats: io.layerStats, ...(io.warmLayers != null ? { warmLayers: io.warmLayers } : {}) })
      }, config)
      await d.start()
      const mirror = d.mirrorServer != null ? `, mirror on ${d.mirrorServer.url}` : ''
      const http = d.httpListener != null ? `, metrics on ${d.httpListener.url}/metrics` : ''
      process.stderr.write(`ipfs-estargz daemon: snapshotter on ${config.address}, control API on ${apiAddressFor(config)}${mirror}${http}, repo ${config.root}\n`)
      await notify.ready(`serving: snapshotter on ${config.address}`)
      void preload?.().catch((err: Error) => { logger.warn({ err: err.message }, 'loading the pull command ahead failed (it loads when first run)') })
      await new Promise<void>(resolve => {
        process.once('SIGTERM', resolve)
        process.once('SIGINT', resolve)
      })
      logger.info('stopping')
      await notify.stopping()
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
    .description('print the containerd configuration that registers ipfs-estargz as a proxy snapshotter (a snippet, an existing config merged, or a drop-in for `imports`), or with --mirror the hosts.toml that pulls through the node\'s mirror')
    .option('--address <sock|host:port>', `snapshotter socket (default ${DEFAULTS.address}); with --mirror the mirror's HOST:PORT (default ${MIRROR_DEFAULTS.address})`)
    .option('--no-cri', 'leave out the Kubernetes (CRI) settings')
    .addOption(new Option('--containerd-version <major>', 'containerd 1 (1.6/1.7, config version 2) or 2 (config version 3)').choices(['1', '2']).default('1'))
    .option('--merge <config.toml>', 'print this containerd config (e.g. from `containerd config default`) with the settings merged in; `-` reads stdin')
    .option('--drop-in', 'print a file for containerd\'s `imports` (proxy plugin only: containerd replaces a whole plugin section from an import, so the CRI settings go into the main config)')
    .option('--mirror', 'print the hosts.toml that makes containerd pull through the mirror (plain HTTP)')
    .option('--https', 'with --mirror: the mirror serves HTTPS ([mirror] tls_cert)')
    .option('--upstream <registry>', 'with --mirror: the registry the mirror stands in front of (docker.io, ghcr.io, …): containerd falls back to it on a 404')
    .action(async (flags: { address?: string, cri: boolean, containerdVersion: '1' | '2', merge?: string, dropIn?: boolean, mirror?: boolean, https?: boolean, upstream?: string }) => {
      if (flags.mirror === true) {
        const address = flags.address ?? MIRROR_DEFAULTS.address
        parseAddress(address) // a clear error for anything but HOST:PORT
        await writeStdout(hostsToml({ mirror: `${flags.https === true ? 'https' : 'http'}://${address}`, upstream: flags.upstream }))
        return
      }
      if (flags.merge != null && flags.dropIn === true) throw new UsageError('--merge and --drop-in are two different outputs: choose one')
      const options = { address: flags.address ?? DEFAULTS.address, cri: flags.cri, containerdVersion: Number(flags.containerdVersion) as ContainerdMajor }
      if (flags.dropIn === true) return await writeStdout(containerdDropIn(options))
      if (flags.merge != null) {
        const existing = flags.merge === '-' ? await readStdin() : await readFile(flags.merge, 'utf8')
        return await writeStdout(mergeContainerdConfig(existing, options))
      }
      await writeStdout(containerdConfigSnippet(options))
    })
}

async function readStdin (): Promise<string> {
  const parts: Buffer[] = []
  for await (const chunk of process.stdin) parts.push(chunk as Buffer)
  return Buffer.concat(parts).toString('utf8')
}
