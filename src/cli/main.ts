import '../polyfill.js'
import { readFile } from 'node:fs/promises'
import { isAbsolute, join, resolve } from 'node:path'
import { API_ENV, API_FILE, DEFAULT_API_ADDRESS, daemonAlive, probeDaemon, runInDaemon } from '../daemon/control-client.js'
import { DaemonUnreachableError } from '../daemon/errors.js'
import { DEFAULTS as REPO_DEFAULTS } from '../ipfs/repo.js'
import { describeError } from './errors.js'
import { EXIT_STDOUT_CLOSED, watchStdout } from './output.js'

/** Commands that use the repo and so go through a daemon that owns it. */
const FORWARDED = new Set(['push', 'optimize', 'image', 'pull', 'id', 'tag', 'peers', 'stats', 'export', 'import', 'pin', 'gc'])

/** Makes the paths in a command line absolute, since the daemon runs in another directory. */
function absolutize (argv: string[], cwd: string): string[] {
  const abs = (p: string): string => (isAbsolute(p) ? p : resolve(cwd, p))
  const pathOpts = new Set(['--repo', '--prioritized-files', '--record-in', '--record-out', '--prefetch-list', '-o', '--output'])
  // `import FILE`: its one operand is a path (`-`, stdin, is refused by the daemon itself)
  const operandOf = argv[0] === 'import' ? new Set(['--repo', '--name', '--log-level']) : undefined
  return argv.map((a, i) => {
    if (a === '-') return a
    if (operandOf != null && i > 0 && !a.startsWith('-') && !operandOf.has(argv[i - 1])) return abs(a)
    const m = /^(oci|oci-archive|docker-archive):(.+)$/.exec(a)
    if (m != null) return `${m[1]}:${abs(m[2])}`
    if (i > 0 && pathOpts.has(argv[i - 1])) return abs(a)
    const eq = a.indexOf('=')
    if (eq > 0 && pathOpts.has(a.slice(0, eq))) return `${a.slice(0, eq + 1)}${abs(a.slice(eq + 1))}`
    return a
  })
}

/** `--repo DIR` or `--repo=DIR` of a command line. */
function repoFlag (argv: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--repo') return argv[i + 1]
    if (argv[i].startsWith('--repo=')) return argv[i].slice('--repo='.length)
  }
  return undefined
}

/**
 * Which daemon a repo command runs in, if any. A named repo (`--repo`, else
 * `$IPFS_ESTARGZ_PATH`) is used through its daemon while one owns it (`<repo>/api`), else opened
 * here. With no repo named, the daemon is the one on `$IPFS_ESTARGZ_API`, else on the default
 * control socket; a daemon found there is used with its own root, and a socket whose daemon does
 * not answer is an error: the command never silently runs on another repo instead. Only when
 * no daemon socket exists at all does the CLI open `~/.ipfs-estargz` itself.
 */
async function daemonFor (argv: string[]): Promise<{ address: string, repo?: string } | undefined> {
  const named = repoFlag(argv) ?? (process.env[REPO_DEFAULTS.envVar] !== '' ? process.env[REPO_DEFAULTS.envVar] : undefined)
  if (named != null && named !== '') {
    const repo = resolve(named)
    const address = (await readFile(join(repo, API_FILE), 'utf8').catch(() => undefined))?.trim()
    if (address == null || !await daemonAlive(address)) return undefined
    return { address, repo }
  }
  const fromEnv = process.env[API_ENV]
  const address = fromEnv != null && fromEnv !== '' ? resolve(fromEnv) : DEFAULT_API_ADDRESS
  const probe = await probeDaemon(address)
  if (probe.state === 'up') return { address, repo: probe.root }
  const where = address === DEFAULT_API_ADDRESS ? `the default daemon socket ${address}` : `$${API_ENV} (${address})`
  const hint = `start the daemon, or name a repo to use without one (--repo DIR or $${REPO_DEFAULTS.envVar})`
  if (probe.state === 'down') throw new DaemonUnreachableError(`no daemon answers on ${where}: ${probe.why}; ${hint}`)
  if (address !== DEFAULT_API_ADDRESS) throw new DaemonUnreachableError(`no daemon socket at ${where}; ${hint}`)
  return undefined
}

async function main (argv: string[]): Promise<number> {
  if (FORWARDED.has(argv[0]) && !argv.includes('--help') && !argv.includes('-h')) {
    const daemon = await daemonFor(argv)
    if (daemon != null) {
      const ac = new AbortController()
      process.once('SIGINT', () => ac.abort())
      process.once('SIGTERM', () => ac.abort())
      const args = absolutize(argv, process.cwd())
      if (repoFlag(argv) == null && daemon.repo != null) args.push('--repo', daemon.repo)
      return await runInDaemon(daemon.address, args, { signal: ac.signal, stdoutClosedCode: EXIT_STDOUT_CLOSED })
    }
  }
  // loaded only here: a forwarded command needs none of the commands
  const { runCli } = await import('./program.js')
  return await runCli(argv)
}

watchStdout()
try {
  process.exitCode = await main(process.argv.slice(2))
} catch (err) {
  // One line, never a stack trace (the daemon went away mid-command, ...).
  process.stderr.write(`ipfs-estargz: ${describeError(err)}\n`)
  if (process.env.IPFS_ESTARGZ_DEBUG === '1' && err instanceof Error) process.stderr.write(`${err.stack}\n`)
  process.exitCode = 1
}
