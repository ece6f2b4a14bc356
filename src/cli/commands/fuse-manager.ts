import { join } from 'node:path'
import { Command } from 'commander'
import { DEFAULTS as DAEMON_DEFAULTS } from '../../daemon/config.js'
import { daemonAlive } from '../../daemon/control-client.js'
import { DEFAULTS as MANAGER_DEFAULTS, FuseManager, FuseManagerClient, FuseManagerUnavailableError } from '../../fusemgr/index.js'
import { createLogger, type LogLevel } from '../../logging.js'
import { UsageError } from '../errors.js'
import { DEFAULTS as CLI_DEFAULTS, logLevelOption } from '../options.js'
import { writeStdout } from '../output.js'

interface Flags {
  root: string
  socket?: string
  logLevel: LogLevel
  diskCacheBytes: string
  memoryCacheBytes: string
  idleExitSec: string
  stop?: boolean
  force?: boolean
  status?: boolean
}

const bytes = (v: string, what: string): number => {
  const n = Number(v)
  if (!Number.isSafeInteger(n) || n < 0) throw new UsageError(`${what} must be a byte count, got ${JSON.stringify(v)}`)
  return n
}

export function fuseManagerCommand (): Command {
  return new Command('fuse-manager')
    .description('serve the daemon\'s lazy FUSE mounts from a process of their own, so running containers survive a daemon restart (the daemon starts it; you rarely run it by hand)')
    .option('--root <dir>', 'the daemon root', DAEMON_DEFAULTS.root)
    .option('--socket <sock>', 'API socket (default: <root>/fuse-manager.sock)')
    .addOption(logLevelOption({ service: true, default: DAEMON_DEFAULTS.logLevel as LogLevel }))
    .option('--disk-cache-bytes <n>', 'chunk cache cap on disk', String(DAEMON_DEFAULTS.fs.diskCacheBytes))
    .option('--memory-cache-bytes <n>', 'chunk cache in memory', String(DAEMON_DEFAULTS.fs.memoryCacheBytes))
    .option('--idle-exit-sec <n>', 'exit after this long with no mounts and no daemon answering', String(MANAGER_DEFAULTS.idleExitMs / 1000))
    .option('--status', 'print the running manager\'s mounts as JSON and exit')
    .option('--stop', 'unmount everything, stop the running manager and exit (containers on lazy layers lose their files); refused while a daemon uses the manager, which would start a new one')
    .option('--force', 'with --stop: stop the manager even while a daemon uses it')
    .action(async (flags: Flags) => {
      const socket = flags.socket ?? join(flags.root, 'fuse-manager.sock')
      if (flags.stop === true || flags.status === true) {
        const client = new FuseManagerClient(socket)
        try {
          if (flags.status === true) await writeStdout(JSON.stringify({ ...(await client.health()), layers: await client.mounts() }, null, 2) + '\n')
          else {
            // A running daemon checks its manager every health_check_interval_sec and starts a new
            // one (mounting every remote snapshot again): stopping only the manager would not stop the mounts.
            const daemon = (await client.health()).blobSocket
            if (daemon != null && flags.force !== true && await daemonAlive(daemon)) {
              throw new UsageError(`a running daemon (API ${daemon}) uses this FUSE manager and would start a new one at once: stop the daemon first, or pass --force`)
            }
            await client.shutdown()
          }
        } catch (err) {
          if (err instanceof FuseManagerUnavailableError && flags.stop === true) return // nothing to stop
          throw err
        }
        return
      }
      const logger = createLogger(flags.logLevel)
      const manager = new FuseManager({ logger }, {
        socket,
        mountRoot: join(flags.root, 'snapshotter'),
        cacheDir: join(flags.root, 'cache', 'chunks'),
        diskCacheBytes: bytes(flags.diskCacheBytes, '--disk-cache-bytes'),
        memoryCacheBytes: bytes(flags.memoryCacheBytes, '--memory-cache-bytes'),
        idleExitMs: bytes(flags.idleExitSec, '--idle-exit-sec') * 1000
      })
      await manager.start()
      const stop = (): void => { void manager.stop() }
      process.once('SIGTERM', stop)
      process.once('SIGINT', stop)
      await manager.done()
      process.off('SIGTERM', stop)
      process.off('SIGINT', stop)
      // a lingering handle (a FUSE thread, a keep-alive socket) must not keep a stopped manager alive
      setTimeout(() => process.exit(), CLI_DEFAULTS.fuseManagerExitGraceMs).unref()
    })
}
