import '../polyfill.js'
import { readFile } from 'node:fs/promises'
import { isAbsolute, join, resolve } from 'node:path'
import { API_FILE, daemonAlive, runInDaemon } from '../daemon/control.js'
import { resolveRepoPath } from '../ipfs/repo.js'
import { describeError } from './errors.js'
import { EXIT_STDOUT_CLOSED, watchStdout } from './output.js'
import { runCli } from './program.js'

/** Commands that use the repo and so go through a daemon that owns it. */
const FORWARDED = new Set(['push', 'image', 'pull', 'id'])

/** Makes the paths in a command line absolute, since the daemon runs in another directory. */
function absolutize (argv: string[], cwd: string): string[] {
  const abs = (p: string): string => (isAbsolute(p) ? p : resolve(cwd, p))
  const pathOpts = new Set(['--repo', '--prioritized-files'])
  return argv.map((a, i) => {
    const m = /^(oci|oci-archive|docker-archive):(.+)$/.exec(a)
    if (m != null) return `${m[1]}:${abs(m[2])}`
    if (i > 0 && pathOpts.has(argv[i - 1])) return abs(a)
    return a
  })
}

async function main (argv: string[]): Promise<number> {
  if (FORWARDED.has(argv[0]) && !argv.includes('--help') && !argv.includes('-h')) {
    const i = argv.indexOf('--repo')
    const repo = resolveRepoPath(i >= 0 ? argv[i + 1] : undefined)
    const address = await readFile(join(repo, API_FILE), 'utf8').catch(() => undefined)
    if (address != null && await daemonAlive(address.trim())) {
      const ac = new AbortController()
      process.once('SIGINT', () => ac.abort())
      process.once('SIGTERM', () => ac.abort())
      const args = absolutize(argv, process.cwd())
      if (i < 0) args.push('--repo', repo)
      return await runInDaemon(address.trim(), args, { signal: ac.signal, stdoutClosedCode: EXIT_STDOUT_CLOSED })
    }
  }
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
