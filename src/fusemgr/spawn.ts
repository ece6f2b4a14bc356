import { spawn } from 'node:child_process'
import { closeSync, openSync, readFileSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from '../logging.js'
import { FuseManagerClient, type FuseManagerClientOptions } from './api.js'
import { FuseManagerStartError, FuseManagerUnavailableError } from './errors.js'

/** Spawn defaults, in one place. */
export const DEFAULTS = {
  /** How long a new manager may take to answer its socket. */
  startTimeoutMs: 20_000,
  /** A running manager must answer its health route within this long to be used. */
  healthTimeoutMs: 5_000,
  /** While a new manager starts, each health probe waits this long... */
  startProbeTimeoutMs: 2_000,
  /** ...and the next one comes this much later. */
  startProbeIntervalMs: 100,
  /**
   * V8 flags for the manager: its garbage is chunk-sized buffers, and a 2 MiB semi-space (V8's
   * default is 16) keeps its RSS down at no measurable cost in read time (docs/benchmarks.md).
   */
  nodeFlags: ['--max-semi-space-size=2'] as readonly string[],
  /** glibc malloc arenas: the default (8 per core) fragments with libuv's zlib threads. */
  mallocArenaMax: '2'
} as const

export interface EnsureOptions {
  socket: string
  /** The daemon root (the manager clears stale mounts under `<root>/snapshotter`). */
  root: string
  /** Where the manager's log lines go (appended). */
  logFile: string
  logLevel: string
  diskCacheBytes: number
  memoryCacheBytes: number
  /** argv that runs our CLI; default: this process's node, its flags and its script. */
  command?: string[]
  startTimeoutMs?: number
  /** Timeouts of the client returned. */
  client?: FuseManagerClientOptions
}

/**
 * Returns a client of the manager answering on `socket`, starting one first when none does. The
 * manager runs detached, in its own session, so it outlives the daemon (which is the point).
 */
export async function ensureFuseManager (options: EnsureOptions, logger: Logger): Promise<{ client: FuseManagerClient, started: boolean, pid: number }> {
  const client = new FuseManagerClient(options.socket, options.client)
  try {
    const h = await client.health(AbortSignal.timeout(DEFAULTS.healthTimeoutMs))
    logger.info({ managerPid: h.pid, mounts: h.mounts, socket: options.socket }, 'found a running FUSE manager')
    return { client, started: false, pid: h.pid }
  } catch (err) {
    if (!(err instanceof FuseManagerUnavailableError)) throw err
  }
  const command = options.command ?? [process.execPath, ...process.execArgv, ...DEFAULTS.nodeFlags.filter(f => !process.execArgv.some(a => a.startsWith(f.split('=')[0]))), process.argv[1]]
  const args = [...command.slice(1), 'fuse-manager',
    '--root', options.root, '--socket', options.socket, '--log-level', options.logLevel,
    '--disk-cache-bytes', String(options.diskCacheBytes), '--memory-cache-bytes', String(options.memoryCacheBytes)]
  await mkdir(dirname(options.logFile), { recursive: true })
  const fd = openSync(options.logFile, 'a', 0o600)
  let child
  try {
    child = spawn(command[0], args, { detached: true, stdio: ['ignore', fd, fd], env: { MALLOC_ARENA_MAX: DEFAULTS.mallocArenaMax, ...process.env } })
  } finally {
    closeSync(fd)
  }
  child.unref()
  let exit: string | undefined
  child.once('exit', (code, sig) => { exit = sig ?? String(code) })
  child.once('error', (err) => { exit = err.message })
  const deadline = Date.now() + (options.startTimeoutMs ?? DEFAULTS.startTimeoutMs)
  while (Date.now() < deadline && exit == null) {
    try {
      const h = await client.health(AbortSignal.timeout(DEFAULTS.startProbeTimeoutMs))
      logger.info({ managerPid: h.pid, socket: options.socket, log: options.logFile }, 'started the FUSE manager')
      return { client, started: true, pid: h.pid }
    } catch {
      await sleep(DEFAULTS.startProbeIntervalMs)
    }
  }
  if (exit == null) child.kill('SIGKILL')
  let tail = ''
  try { tail = readFileSync(options.logFile, 'utf8').split('\n').slice(-15).join('\n') } catch {}
  throw new FuseManagerStartError(`the FUSE manager did not start (${exit != null ? `exited: ${exit}` : 'no answer in time'}); last lines of ${options.logFile}:\n${tail}`)
}
