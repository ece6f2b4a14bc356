import { fork, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { fuseMountsUnder, lazyUnmount } from '../fs/index.js'
import type { Logger, LogLevel } from '../logging.js'
import { DEFAULTS } from './config.js'
import * as errors from './errors.js'
import { SandboxError, type OptimizeError } from './errors.js'
import type { RecordEntry } from './record.js'
import type { ChildMessage, StartMessage } from './sandbox-child.js'
import type { SandboxLayer, SandboxResult, SandboxRuntime } from './sandbox-run.js'
import type { Workload } from './workload.js'

export type { SandboxLayer, SandboxResult, SandboxRuntime } from './sandbox-run.js'

export interface SandboxComponents {
  logger: Logger
  /** Gets the workload's stdout and stderr. */
  output?: (text: string) => void
}

export interface SandboxOptions {
  /** The manifest the layers are of (recorded with every access). */
  manifestDigest: string
  /** The workload is killed after this long. */
  periodMs: number
  /** Where the sandbox's mountpoints are made (a private directory is created in it). */
  tmpDir: string
  scratchBytes?: number
  killWaitMs?: number
  maxEntries?: number
  /** How the workload is isolated (default `auto`: runc when installed). */
  runtime?: SandboxRuntime
  /** Log level of the sandbox process (its log goes to this process's stderr). */
  logLevel?: LogLevel
  signal?: AbortSignal
}

export interface SandboxRun {
  result: SandboxResult
  /** First accesses, in order: the record. */
  entries: RecordEntry[]
  /** Accesses left out because the record was full. */
  dropped: number
}

/** Our error classes by code, to raise in this process what the sandbox process reported. */
const BY_CODE = new Map<string, new (message: string) => OptimizeError>(
  Object.values(errors).flatMap((c): Array<[string, new (message: string) => OptimizeError]> =>
    typeof c === 'function' && typeof (c as { code?: unknown }).code === 'string' ? [[(c as { code: string }).code, c as new (message: string) => OptimizeError]] : [])
)

/** An error the sandbox process reported: the same class when it is one of ours, else a SandboxError with its message. */
function childError (e: { name: string, code?: string, message: string }): OptimizeError {
  const Cls = e.code != null ? BY_CODE.get(e.code) : undefined
  return Cls != null ? new Cls(e.message) : new SandboxError(e.code != null ? `${e.message} (${e.code})` : e.message)
}

/** Start time of a process (field 22 of /proc/PID/stat), to tell it from a later one with its pid. */
function startTime (pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
  } catch {
    return undefined
  }
}

/**
 * Runs a workload once over the image's layers, each mounted lazily through our FUSE layer with
 * an access hook, and returns the first access of each file per layer, in order, and how the
 * workload ended. The sandbox: private mount, network (loopback only) and pid namespaces, an
 * overlay of the layers with a tmpfs for its writes (nothing is kept), a chroot into it, a fresh
 * /proc, a /dev with a few host devices. The workload is killed (its whole pid namespace) after
 * `periodMs`, on abort, or when anything fails.
 *
 * The FUSE mounts are served by a process of their own, forked here: a process serving FUSE
 * while its children exit can deadlock at unmount, and that must never be the daemon. It exits
 * with its mounts up; they are detached here, and the process (and what it started) is killed
 * if it does not finish in time. Nothing is left mounted or running when this returns.
 *
 * Not a security boundary against the image: the workload runs as the image's user, root by
 * default, with root's capabilities. Run only images you would run in a container.
 */
export async function runInSandbox (components: SandboxComponents, layers: readonly SandboxLayer[], workload: Workload, options: SandboxOptions): Promise<SandboxRun> {
  const log = components.logger
  options.signal?.throwIfAborted()
  const dir = await mkdtemp(join(options.tmpDir, 'sandbox-'))
  await chmod(dir, 0o700)
  const pids: Array<{ pid: number, start: string | undefined }> = []
  let child: ChildProcess | undefined
  try {
    child = fork(new URL('./sandbox-child.js', import.meta.url), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'json' })
    const proc = child
    const exited = new Promise<void>(resolve => {
      if (proc.exitCode != null || proc.signalCode != null) resolve()
      else proc.once('exit', () => resolve())
    })
    const outcome = new Promise<SandboxRun>((resolve, reject) => {
      proc.on('message', (m: ChildMessage) => {
        if (m.t === 'output') components.output?.(m.data)
        else if (m.t === 'pids') {
          for (const pid of [m.sandbox, m.init]) if (pid != null && !pids.some(p => p.pid === pid)) pids.push({ pid, start: startTime(pid) })
        } else if (m.t === 'result') resolve({ result: m.result, entries: m.entries, dropped: m.dropped })
        else if (m.t === 'error') reject(childError(m.error))
      })
      proc.once('error', (err) => reject(new SandboxError(`the sandbox process failed: ${err.message}`)))
      void exited.then(() => reject(new SandboxError(`the sandbox process exited (${String(proc.exitCode ?? proc.signalCode)}) before it reported`)))
    })
    outcome.catch(() => {})
    const onAbort = (): void => { if (proc.connected) proc.send({ t: 'stop' }) }
    options.signal?.addEventListener('abort', onAbort, { once: true })
    try {
      const start: StartMessage = {
        t: 'start', dir, layers: [...layers], workload, manifestDigest: options.manifestDigest, periodMs: options.periodMs,
        scratchBytes: options.scratchBytes, killWaitMs: options.killWaitMs, maxEntries: options.maxEntries, logLevel: options.logLevel ?? 'warn', runtime: options.runtime
      }
      proc.send(start)
      try {
        const run = await outcome
        options.signal?.throwIfAborted()
        return run
      } catch (err) {
        // cancelled: say so, not how the sandbox went down because of it
        options.signal?.throwIfAborted()
        throw err
      }
    } finally {
      options.signal?.removeEventListener('abort', onAbort)
      let timer: NodeJS.Timeout | undefined
      const inTime = await Promise.race([
        exited.then(() => true),
        new Promise<boolean>(resolve => { timer = setTimeout(() => resolve(false), DEFAULTS.childExitMs) })
      ])
      clearTimeout(timer)
      if (!inTime) {
        log.warn({ pid: proc.pid }, 'the sandbox process did not exit; killing it')
        proc.kill('SIGKILL')
        await exited
      }
    }
  } finally {
    // Whatever the sandbox process started and left running (it is gone now) is killed...
    for (const { pid, start } of pids) {
      if (start != null && startTime(pid) === start) {
        try { process.kill(pid, 'SIGKILL') } catch {}
      }
    }
    // ...and its FUSE mounts, which lost their server, are detached.
    for (const m of await fuseMountsUnder(dir).catch(() => [])) {
      await lazyUnmount(m.mountpoint).catch(err => log.error({ mountpoint: m.mountpoint, err: (err as Error).message }, 'could not detach a sandbox mount'))
    }
    await rm(dir, { recursive: true, force: true }).catch(err => log.warn({ dir, err: (err as Error).message }, 'could not remove the sandbox directory'))
  }
}
