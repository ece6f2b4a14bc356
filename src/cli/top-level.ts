import { readFileSync } from 'node:fs'
import type { Command } from 'commander'

/**
 * The top-level `--help` and `--version`, answered without loading a single command module
 * (they pull in Helia, libp2p, gRPC and FUSE: seconds of start-up). The help lists each
 * command's usage and a one-line summary from this table; `ipfs-estargz <command> --help`
 * still comes from the command itself. test/cli/top-level.test.ts checks the table against
 * the registered commands (names, order, usage), so a new command cannot be left out.
 */
export const DESCRIPTION = 'IPFS-backed lazy container images: eStargz conversion, lazy FUSE mounts, containerd snapshotter'

/** [usage as commander prints it, one-line summary], in program.ts's order. */
export const COMMAND_TABLE: ReadonlyArray<readonly [string, string]> = [
  ['layer', 'build, verify, list, read eStargz layers'],
  ['push [options] <source>', 'convert an image to eStargz, add to IPFS'],
  ['optimize [options] <source>', 'push, the files a workload reads first'],
  ['pull [options] <ref>', 'pull an image from IPFS into containerd'],
  ['image', 'inspect and list images in IPFS'],
  ['mount [options] <cid> <mountpoint>', 'mount an image, fetching only what is read'],
  ['umount [options] <mountpoint>', 'unmount what `mount` mounted'],
  ['daemon [options]', 'run the node and the snapshotter'],
  ['fuse-manager [options]', 'serve the daemon\'s FUSE mounts'],
  ['id [options]', 'print the peer id and multiaddrs'],
  ['containerd-config [options]', 'print containerd\'s config for the node'],
  ['tag [options] [cid] <name:tag>', 'give an image a friendly name'],
  ['mirror', 'helpers for mirror mode'],
  ['swarm', 'private swarm keys'],
  ['peers [options]', 'list the connected peers'],
  ['stats [options]', 'bytes fetched per source and peer'],
  ['export [options] <image...>', 'write images as one CAR bundle'],
  ['import [options] <file>', 'read a CAR bundle, verified'],
  ['config', 'the effective configuration'],
  ['pin', 'list, add and remove pins'],
  ['gc [options]', 'remove blocks and cached chunks nothing needs']
]

export function packageVersion (): string {
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version
}

/** A program whose commands are bare stand-ins: enough for commander to lay out the help. */
export async function topLevelProgram (): Promise<Command> {
  // loaded here: `--version` does without it
  const { Command, Help } = await import('commander')
  const program = new Command('ipfs-estargz').description(DESCRIPTION).version(packageVersion())
  const terms = new Map<Command, string>()
  for (const [usage, summary] of COMMAND_TABLE) {
    const cmd = new Command(usage.split(' ')[0]).description(summary)
    terms.set(cmd, usage)
    program.addCommand(cmd)
  }
  const standard = new Help()
  program.configureHelp({ subcommandTerm: (cmd) => terms.get(cmd) ?? standard.subcommandTerm(cmd) })
  return program
}

export interface FastAnswer { stdout?: string, stderr?: string, code: number }

/**
 * The answer to a command line that needs no command module: `--help`, `-h`, `help`,
 * `--version`, `-V`, or nothing at all (the help on stderr, a usage error), as commander
 * answers them. Anything else: undefined.
 */
export async function fastAnswer (argv: readonly string[]): Promise<FastAnswer | undefined> {
  if (argv.length > 1) return undefined
  const [a] = argv
  if (a === '--version' || a === '-V') return { stdout: `${packageVersion()}\n`, code: 0 }
  if (a === '--help' || a === '-h' || a === 'help') return { stdout: (await topLevelProgram()).helpInformation(), code: 0 }
  if (a == null) return { stderr: (await topLevelProgram()).helpInformation({ error: true }), code: 2 }
  return undefined
}
