import '../polyfill.js'
import { readFileSync } from 'node:fs'
import { Command, CommanderError } from 'commander'
import { layerCommand } from './commands/layer.js'
import { pushCommand } from './commands/push.js'
import { imageCommand } from './commands/image.js'
import { mountCommand, umountCommand } from './commands/mount.js'
import { UsageError, describeError } from './errors.js'

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }

/** addCommand() does not pass settings down; every command must throw instead of exiting. */
function applyRecursively (cmd: Command): void {
  cmd.exitOverride().showSuggestionAfterError(true)
  for (const sub of cmd.commands) applyRecursively(sub)
}

export function buildProgram (): Command {
  const program = new Command('ipfs-estargz')
    .description('IPFS-backed lazy container images: eStargz conversion, lazy FUSE mounts, containerd snapshotter')
    .version(pkg.version)
  program.addCommand(layerCommand())
  program.addCommand(pushCommand())
  program.addCommand(imageCommand())
  program.addCommand(mountCommand())
  program.addCommand(umountCommand())
  applyRecursively(program)
  return program
}

async function main (argv: string[]): Promise<number> {
  const program = buildProgram()
  try {
    await program.parseAsync(argv)
    return 0
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here too, with exit code 0; commander already printed.
      return err.exitCode === 0 ? 0 : 2
    }
    process.stderr.write(`ipfs-estargz: ${describeError(err)}\n`)
    if (process.env.IPFS_ESTARGZ_DEBUG === '1' && err instanceof Error) process.stderr.write(`${err.stack}\n`)
    return err instanceof UsageError ? 2 : 1
  }
}

process.exitCode = await main(process.argv)
