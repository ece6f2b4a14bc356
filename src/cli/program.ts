import { readFileSync } from 'node:fs'
import { Command, CommanderError } from 'commander'
import { commandContext, type CommandContext } from './context.js'
import { StdoutClosedError, UsageError, describeError } from './errors.js'
import { EXIT_STDOUT_CLOSED } from './output.js'

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }

/** addCommand() does not pass settings down; every command must throw instead of exiting. */
function applyRecursively (cmd: Command, ctx: CommandContext | undefined): void {
  cmd.exitOverride().showSuggestionAfterError(true)
  if (ctx != null) cmd.configureOutput({ writeOut: (s) => { void ctx.stdout(s) }, writeErr: (s) => ctx.stderr(s) })
  for (const sub of cmd.commands) applyRecursively(sub, ctx)
}

/**
 * Each command is loaded only when it runs (or for the top-level help): `layer build` must not
 * pay for Helia, libp2p and gRPC in start-up time and memory.
 */
const COMMANDS: Record<string, () => Promise<Command>> = {
  layer: async () => (await import('./commands/layer.js')).layerCommand(),
  push: async () => (await import('./commands/push.js')).pushCommand(),
  optimize: async () => (await import('./commands/optimize.js')).optimizeCommand(),
  pull: async () => (await import('./commands/pull.js')).pullCommand(),
  image: async () => (await import('./commands/image.js')).imageCommand(),
  mount: async () => (await import('./commands/mount.js')).mountCommand(),
  umount: async () => (await import('./commands/mount.js')).umountCommand(),
  daemon: async () => (await import('./commands/daemon.js')).daemonCommand(runCli, preloadPull),
  'fuse-manager': async () => (await import('./commands/fuse-manager.js')).fuseManagerCommand(),
  id: async () => (await import('./commands/daemon.js')).idCommand(),
  'containerd-config': async () => (await import('./commands/daemon.js')).containerdConfigCommand(),
  tag: async () => (await import('./commands/mirror.js')).tagCommand(),
  mirror: async () => (await import('./commands/mirror.js')).mirrorCommand(),
  swarm: async () => (await import('./commands/swarm.js')).swarmCommand(),
  peers: async () => (await import('./commands/cluster.js')).peersCommand(),
  stats: async () => (await import('./commands/cluster.js')).statsCommand(),
  export: async () => (await import('./commands/bundle.js')).exportCommand(),
  import: async () => (await import('./commands/bundle.js')).importCommand(),
  config: async () => (await import('./commands/config.js')).configCommand(),
  pin: async () => (await import('./commands/pin.js')).pinCommand(),
  gc: async () => (await import('./commands/gc.js')).gcCommand()
}

/**
 * Loads the modules of the command whose latency a container start waits on, `pull`, so a
 * daemon's first pull does not load them (~40 ms) between the client's call and the first block
 * asked. The other commands load when first run: preloading them would cost the daemon memory for
 * no start-up gain.
 */
async function preloadPull (): Promise<void> {
  await COMMANDS.pull()
}

export async function buildProgram (argv: string[], ctx?: CommandContext): Promise<Command> {
  const program = new Command('ipfs-estargz')
    .description('IPFS-backed lazy container images: eStargz conversion, lazy FUSE mounts, containerd snapshotter')
    .version(pkg.version)
  const wanted = argv[0] != null && argv[0] in COMMANDS ? [argv[0]] : Object.keys(COMMANDS)
  for (const name of wanted) program.addCommand(await COMMANDS[name]())
  applyRecursively(program, ctx)
  return program
}

/**
 * Runs one command line. `ctx` is set when the daemon runs it for a client; then errors go to the
 * client's stderr. Returns the exit code: 0, 1 for failures, 2 for usage errors.
 */
export async function runCli (argv: string[], ctx?: CommandContext): Promise<number> {
  const program = await buildProgram(argv, ctx)
  const stderr = (s: string): void => { if (ctx != null) ctx.stderr(s); else process.stderr.write(s) }
  const go = async (): Promise<number> => {
    try {
      await program.parseAsync(argv, { from: 'user' })
      return 0
    } catch (err) {
      if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2
      if (err instanceof StdoutClosedError) return EXIT_STDOUT_CLOSED
      stderr(`ipfs-estargz: ${describeError(err)}\n`)
      if (process.env.IPFS_ESTARGZ_DEBUG === '1' && err instanceof Error) stderr(`${err.stack}\n`)
      return err instanceof UsageError ? 2 : 1
    }
  }
  return ctx != null ? await commandContext.run(ctx, go) : await go()
}

