import { execFile, spawn, type ChildProcessByStdio } from 'node:child_process'
import { resolve } from 'node:path'
import type { Readable, Writable } from 'node:stream'
import { promisify } from 'node:util'
import { DEFAULTS } from './config.js'
import { UnmountError } from './errors.js'

const run = promisify(execFile)

/**
 * Why a process serving FUSE mounts detaches them through a long-lived child instead of a
 * `fusermount` child per unmount:
 *
 * libfuse 2 (under fuse-native) blocks only SIGHUP, SIGINT, SIGQUIT and SIGTERM in its worker
 * threads, and cancels those threads when a session ends. libuv runs its signal handler on
 * whichever thread the kernel picks, and that handler takes libuv's process-wide signal lock (a
 * byte in a pipe) and gives it back with a `write()`, a cancellation point. A `fusermount -uz`
 * child exits exactly as the session it detached ends: its SIGCHLD, handled on a worker being
 * cancelled, takes the lock byte with the thread, and the next signal-lock of the main thread
 * (a spawn) blocks forever in a read of that pipe, with every mount of the process
 * (test/reliability/unmount-cycles.test.ts: 2 of 5 runs of 600 mount/unmount cycles hung). The
 * helper's own children exit in the helper: the serving process has no child exit while its
 * sessions end.
 */
const SCRIPT = [
  'while IFS= read -r p; do',
  '  if e=$(fusermount -uz "$p" 2>&1) || e=$(umount -l "$p" 2>&1); then echo ok',
  '  else printf \'err %s\\n\' "$(printf %s "$e" | tr \'\\n\' \' \')"; fi',
  'done'
].join('\n')

export interface UnmountHelperOptions {
  /** A detach (fusermount, then umount -l) with no answer after this many ms fails and the helper is dropped (detaches then run a child each, until it is started again). */
  timeoutMs?: number
}

interface Waiter { mountpoint: string, resolve: () => void, reject: (err: Error) => void, timer: NodeJS.Timeout }

/** Detaches mounts lazily through one long-lived `sh` that runs `fusermount -uz` (then `umount -l`) per request line. */
export class UnmountHelper {
  private child?: ChildProcessByStdio<Writable, Readable, null>
  private readonly waiting: Waiter[] = []
  private buffered = ''
  private readonly timeoutMs: number
  /** Mounts detached through the helper, and detaches it failed. */
  readonly counts = { detached: 0, failed: 0 }

  constructor (options: UnmountHelperOptions = {}) {
    this.timeoutMs = options.timeoutMs ?? DEFAULTS.unmountTimeoutMs
  }

  get running (): boolean {
    return this.child != null
  }

  /** Its pid, while it runs. */
  get pid (): number | undefined {
    return this.child?.pid
  }

  /**
   * Spawns the helper. Neither it nor its pipes keep this process alive (a pending detach's
   * timer does): it ends when its input closes, at `stop()` or with this process.
   */
  start (): void {
    if (this.child != null) return
    const child = spawn('sh', ['-c', SCRIPT], { stdio: ['pipe', 'pipe', 'ignore'] })
    this.child = child
    child.unref()
    ;(child.stdin as Writable & { unref?: () => void }).unref?.()
    ;(child.stdout as Readable & { unref?: () => void }).unref?.()
    child.stdout.setEncoding('utf8')
    child.stdout.on('data', (s: string) => { this.onOutput(s) })
    child.stdin.on('error', () => {}) // a dead helper: its exit fails the waiters
    child.on('error', err => { this.drop(child, `the unmount helper failed: ${err.message}`) })
    child.on('exit', (code, signal) => { this.drop(child, `the unmount helper exited (${signal ?? `code ${String(code)}`})`) })
  }

  /** Forgets `child` (if it is still the helper) and fails every detach waiting on it. */
  private drop (child: ChildProcessByStdio<Writable, Readable, null>, why: string): void {
    if (this.child !== child) return
    this.child = undefined
    this.buffered = ''
    for (const w of this.waiting.splice(0)) { clearTimeout(w.timer); w.reject(new UnmountError(w.mountpoint, why)) }
  }

  /** Ends the helper once its pending detaches are answered (closing its input ends its loop). */
  async stop (): Promise<void> {
    const child = this.child
    if (child == null) return
    const exited = new Promise<void>(resolve => child.once('exit', () => { resolve() }))
    child.stdin.end()
    const timer = setTimeout(() => child.kill('SIGKILL'), this.timeoutMs)
    try {
      await exited
    } finally {
      clearTimeout(timer)
    }
  }

  /** Detaches `mountpoint` lazily; rejects with an {@link UnmountError} carrying fusermount's and umount's message. */
  async detach (mountpoint: string): Promise<void> {
    const child = this.child
    if (child == null) throw new UnmountError(mountpoint, 'the unmount helper is not running')
    // one request per line: a name with a newline would be two
    if (mountpoint.includes('\n')) throw new UnmountError(mountpoint, 'a mountpoint with a newline in its name')
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        // answers come in order: a stuck detach stalls every later one, so the helper goes (its
        // exit is a child exit too, but a rare one, not tied to a session's end as fusermount's is)
        this.drop(child, `the unmount helper did not answer within ${this.timeoutMs} ms`)
        child.kill('SIGKILL')
      }, this.timeoutMs)
      this.waiting.push({
        mountpoint,
        resolve: () => { this.counts.detached++; resolve() },
        reject: (err) => { this.counts.failed++; reject(err) },
        timer
      })
      child.stdin.write(mountpoint + '\n')
    })
  }

  private onOutput (s: string): void {
    this.buffered += s
    for (let nl = this.buffered.indexOf('\n'); nl >= 0; nl = this.buffered.indexOf('\n')) {
      const line = this.buffered.slice(0, nl)
      this.buffered = this.buffered.slice(nl + 1)
      const w = this.waiting.shift()
      if (w == null) continue
      clearTimeout(w.timer)
      if (line === 'ok') w.resolve()
      else w.reject(new UnmountError(w.mountpoint, line.replace(/^err /, '').trim() || 'fusermount and umount failed'))
    }
  }
}

/** This process's helper (see {@link startUnmountHelper}). */
let shared: UnmountHelper | undefined

/**
 * Starts this process's unmount helper (again, if the last one died; `options` of the first call
 * hold), which every later {@link detachMount} uses. `FuseMount.mount()` starts it before each mount, so a process that
 * serves FUSE mounts has it before its first session and keeps it for its life: stopping it as
 * the last session ends would be the very child exit it is there to avoid.
 */
export function startUnmountHelper (options: UnmountHelperOptions = {}): UnmountHelper {
  shared ??= new UnmountHelper(options)
  shared.start()
  return shared
}

/** This process's helper, if one was started (for its counters). */
export function unmountHelper (): UnmountHelper | undefined {
  return shared
}

/**
 * Detaches a mount lazily: never blocks on open files or on a FUSE server that is gone.
 * fusermount detaches a user's own FUSE mount (and, for root, any mount); umount is the fallback
 * where fusermount is missing or refuses. Through the process's helper while it runs;
 * otherwise (never started, dead, or a name it cannot carry) with a child per command.
 */
export async function detachMount (path: string): Promise<void> {
  const mountpoint = resolve(path) // absolute: a name starting with '-' would be an option
  const helper = shared
  if (helper?.running === true && !mountpoint.includes('\n')) {
    await helper.detach(mountpoint)
    return
  }
  try {
    await run('fusermount', ['-uz', mountpoint])
  } catch (err) {
    try {
      await run('umount', ['-l', mountpoint])
    } catch {
      throw new UnmountError(mountpoint, ((err as { stderr?: string }).stderr ?? (err as Error).message).trim())
    }
  }
}
