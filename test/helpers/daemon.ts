import { spawn, type ChildProcess } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { cliPath } from './tools.js'
import { FuseManagerClient } from '../../src/fusemgr/index.js'

/**
 * Stops the FUSE manager a daemon over `root` started (it outlives the daemon on purpose) and
 * waits for its process to exit. Nothing running is fine.
 */
export async function stopFuseManager (root: string): Promise<void> {
  const client = new FuseManagerClient(join(root, 'fuse-manager.sock'))
  let pid: number
  try {
    pid = (await client.health(AbortSignal.timeout(5_000))).pid
    await client.shutdown()
  } catch {
    return
  }
  const alive = (): boolean => { try { process.kill(pid, 0); return true } catch { return false } }
  for (let i = 0; i < 150 && alive(); i++) await new Promise(resolve => setTimeout(resolve, 100))
  if (alive()) process.kill(pid, 'SIGKILL')
}

export interface RunningDaemon {
  root: string
  address: string
  proc: ChildProcess
  /** Everything the daemon wrote to stderr so far. */
  log: () => string
  /** SIGTERM and wait for the exit; then stops the FUSE manager too (unless `keepManager`). */
  stop: (opts?: { keepManager?: boolean }) => Promise<number | null>
  /** SIGKILL, as a crash. */
  kill: () => Promise<void>
}

/**
 * Starts `ipfs-estargz daemon` as a separate process (the way users run it) and resolves once
 * it says it is serving. `config` is written as its TOML file; `env` is added to ours.
 */
export async function startDaemon (opts: { root: string, address?: string, listen?: string[], peers?: string[], config?: string, asInstalled?: boolean, umask?: number, env?: NodeJS.ProcessEnv }): Promise<RunningDaemon> {
  const address = opts.address ?? join(opts.root, 's.sock')
  const args = [cliPath, 'daemon', '--root', opts.root, '--address', address, '--log-level', process.env.IPFS_ESTARGZ_LOG_LEVEL ?? 'info']
  for (const l of opts.listen ?? []) args.push('--listen', l)
  for (const p of opts.peers ?? []) args.push('--peer', p)
  if (opts.config != null) {
    const file = `${opts.root}.config.toml`
    await writeFile(file, opts.config)
    args.push('--config', file)
  }
  // By default the bin runs as an executable (its shebang's node settings), as `ipfs-estargz
  // daemon` runs for users; `asInstalled: false` runs `node bin/ipfs-estargz.js` (node's defaults).
  let [cmd, argv] = opts.asInstalled !== false ? [cliPath, args.slice(1)] : [process.execPath, args]
  // `umask`: started the way a shell with that umask would start it
  if (opts.umask != null) [cmd, argv] = ['sh', ['-c', `umask ${opts.umask.toString(8)} && exec "$0" "$@"`, cmd, ...argv]]
  const proc = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...opts.env } })
  let log = ''
  proc.stderr?.on('data', (d: Buffer) => { log = (log + d.toString()).slice(-200_000) })
  const exited = new Promise<number | null>(resolve => proc.on('exit', (code) => resolve(code)))
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`daemon did not start in 60 s:\n${log}`)), 60_000)
    const check = (): void => {
      if (log.includes('ipfs-estargz daemon: snapshotter on')) { clearTimeout(timer); resolve() }
    }
    proc.stderr?.on('data', check)
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`daemon exited with ${String(code)}:\n${log}`)) })
  })
  return {
    root: opts.root,
    address,
    proc,
    log: () => log,
    stop: async (o = {}) => {
      if (proc.exitCode == null && proc.signalCode == null) proc.kill('SIGTERM')
      const code = await exited
      if (o.keepManager !== true) await stopFuseManager(opts.root)
      return code
    },
    kill: async () => {
      proc.kill('SIGKILL')
      await exited
    }
  }
}
