import { spawn, type ChildProcess } from 'node:child_process'
import { constants as fsConstants, existsSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { access, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { LayerFs, MountManager } from '../fs/index.js'
import type { Logger } from '../logging.js'
import { FileSource } from '../source/file.js'
import { DEFAULTS } from './config.js'
import { SandboxError } from './errors.js'
import { SETUP_RUNC, overlayRootLines, runcSpec } from './sandbox-runc.js'
import { resolveUser, withHome, type Workload } from './workload.js'

/**
 * How the workload is isolated: `runc` runs it as a container (the OCI runtime containerd
 * uses); `namespaces` with unshare and a chroot (util-linux alone); `auto`: namespaces for now.
 */
export type SandboxRuntime = 'auto' | 'runc' | 'namespaces'

/** An eStargz layer on local disk, bottom first in a list. */
export interface SandboxLayer {
  blob: string
  tocDigest: string
}

export interface SandboxResult {
  /** Exit code of the workload, when it exited by itself. */
  exitCode: number | null
  /** Signal that ended it (SIGKILL when it was stopped). */
  signal: string | null
  /** True when it was still running at the end of the period and was killed. */
  stopped: boolean
  durationMs: number
  /** What isolated it. */
  runtime: 'runc' | 'namespaces'
}

/** Host directories the sandbox's tools are taken from (never the caller's PATH). */
const HOST_PATH = '/usr/sbin:/usr/bin:/sbin:/bin'

/**
 * Runs in the new mount and network namespaces, before the chroot. Everything it mounts lives in
 * that namespace only and goes away with its last process: a tmpfs for the workload's writes,
 * the overlay of the layers over it, a /dev with a few host devices, /dev/shm, and a loopback
 * interface. The image's own /dev and /proc are replaced by directories first, so a symlink
 * there can never point a mount at the host. Arguments: root, scratch, lowerdir, tmpfs size,
 * devices, then the command to exec.
 */
const SETUP = `set -eu
root=$1 scratch=$2 lower=$3 size=$4 devices=$5
shift 5
${overlayRootLines(['dev', 'proc'])}mount -t tmpfs -o mode=0755,nosuid,noexec,size=1m ipfs-estargz-dev "$root/dev"
for n in $devices; do
  [ -c "/dev/$n" ] || continue
  : > "$root/dev/$n"
  mount --bind "/dev/$n" "$root/dev/$n"
done
mkdir "$root/dev/shm" "$root/dev/pts"
mount -t tmpfs -o "mode=1777,nosuid,nodev,size=$size" ipfs-estargz-shm "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
exec "$@"
`

async function findTool (name: string, pkg = 'util-linux / coreutils'): Promise<string> {
  const found = await lookTool(name)
  if (found == null) throw new SandboxError(`running a workload needs ${name} (${pkg}), which is not in ${HOST_PATH}`)
  return found
}

async function lookTool (name: string): Promise<string | undefined> {
  for (const dir of HOST_PATH.split(':')) {
    const p = join(dir, name)
    if (await access(p, fsConstants.X_OK).then(() => true, () => false)) return p
  }
  return undefined
}

/** A file of the merged image, read through the layer views (topmost first), or undefined. */
async function readImageFile (layers: readonly LayerFs[], path: string): Promise<string | undefined> {
  const parts = path.split('/').filter(p => p !== '')
  for (let i = layers.length - 1; i >= 0; i--) {
    const fs = layers[i]
    let e
    try {
      e = fs.resolve('/' + parts.join('/'))
    } catch {
      // Not here; an opaque parent (or a whiteout of one) hides the layers below.
      for (let n = parts.length - 1; n >= 1; n--) {
        try {
          const dir = fs.resolve('/' + parts.slice(0, n).join('/'))
          if (dir.whiteout || fs.listxattr(dir).includes('trusted.overlay.opaque')) return undefined
        } catch {}
      }
      continue
    }
    if (e.whiteout || e.node.type !== 'reg') return undefined
    const size = Math.min(e.node.size, 4 << 20)
    return Buffer.from(await fs.read(e, 0, size)).toString('utf8')
  }
  return undefined
}

/** Pids of the direct children of `pid` (empty once it is gone). */
async function childrenOf (pid: number): Promise<number[]> {
  const text = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '')
  return text.split(' ').map(Number).filter(n => Number.isInteger(n) && n > 0)
}

/** What the parent learns of the sandbox's processes, to kill them should this process die. */
export interface SandboxPids {
  /** The process spawned here (unshare, later its exec'd successors). */
  sandbox: number
  /** Pid 1 of the workload's pid namespace, once forked. */
  init?: number
}

export interface RunComponents {
  logger: Logger
  /** Gets the workload's stdout and stderr. */
  output?: (chunk: Uint8Array) => void
  onPids?: (pids: SandboxPids) => void
}

export interface RunOptions {
  /** A private, empty directory for the mountpoints (the caller unmounts and removes it). */
  dir: string
  /** The workload is killed after this long. */
  periodMs: number
  /** Access hook of layer `i` (see `LayerFsOptions.onAccess`). */
  onAccess: (layerIndex: number) => (path: string) => void
  scratchBytes?: number
  killWaitMs?: number
  /** Default: `auto`. */
  runtime?: SandboxRuntime
  signal?: AbortSignal
}

/**
 * The sandbox itself, run in a process of its own (see `runInSandbox`): mounts the layers in
 * `dir`, starts the workload, stops it. It never unmounts: the process exits afterwards, and
 * its parent detaches the mounts it leaves (unmounting FUSE here, while children exit, can
 * deadlock the process: libfuse cancels its worker threads, one of which may be running
 * libuv's SIGCHLD handler).
 */
export async function runSandbox (components: RunComponents, layers: readonly SandboxLayer[], workload: Workload, options: RunOptions): Promise<SandboxResult> {
  const log = components.logger
  if (process.getuid?.() !== 0) throw new SandboxError('running a workload needs root (mount namespaces, FUSE, overlayfs); --record-in or --prefetch-list need not run it')
  if (!existsSync('/dev/fuse')) throw new SandboxError('running a workload needs /dev/fuse')
  if (layers.length === 0) throw new SandboxError('the image has no layers')
  const setpriv = await findTool('setpriv')
  const unshare = await findTool('unshare')
  const env = await findTool('env')
  const dir = options.dir
  // Overlay options are comma separated and lowerdir colon separated.
  if (/[,:\s]/.test(dir)) throw new SandboxError(`the sandbox directory ${JSON.stringify(dir)} holds a comma, colon or space; set TMPDIR`)
  const mounts = new MountManager({ logger: log }, { root: dir })
  const fss: LayerFs[] = []
  for (let i = 0; i < layers.length; i++) {
    const at = join(dir, 'layers', String(i))
    await mkdir(at, { recursive: true })
    const source = await FileSource.open(layers[i].blob)
    fss.push(await mounts.mountLayer(at, { source, logger: log }, {
      tocDigest: layers[i].tocDigest, prefetchTimeoutMs: 0, backgroundFetch: false, onAccess: options.onAccess(i)
    }))
  }
  const user = resolveUser(workload.user, await readImageFile(fss, 'etc/passwd'), await readImageFile(fss, 'etc/group'))
  const root = join(dir, 'root')
  const scratch = join(dir, 'scratch')
  await mkdir(root)
  await mkdir(scratch)
  const lower = fss.map((_f, i) => join(dir, 'layers', String(i))).reverse().join(':')
  const scratchBytes = String(options.scratchBytes ?? DEFAULTS.scratchBytes)
  const wanted = options.runtime ?? 'auto'
  // auto is namespaces for now: runc reads the image's /etc/passwd and /etc/group while it creates
  // the container, through the same FUSE mounts, and those reads would lead the record
  const runc = wanted === 'runc' ? await findTool('runc', 'the runc package') : undefined
  let args: string[]
  /** Stops a runc container the graceful way (runc then cleans up and exits by itself). */
  let stopContainer: (() => Promise<void>) | undefined
  let cleanUp: (() => Promise<void>) | undefined
  if (runc != null) {
    const bundle = join(dir, 'bundle')
    const state = join(dir, 'runc')
    const id = `ipfs-estargz-optimize-${process.pid}-${randomBytes(4).toString('hex')}`
    await mkdir(bundle, { mode: 0o700 })
    const spec = runcSpec({ root, args: workload.args, env: withHome(workload.env, user), cwd: workload.cwd, user, shmBytes: Number(scratchBytes), maxPids: DEFAULTS.maxPids })
    await writeFile(join(bundle, 'config.json'), JSON.stringify(spec), { mode: 0o600 })
    const runcCall = async (argv: string[]): Promise<void> => await new Promise<void>(resolve => {
      const p = spawn(runc, ['--root', state, ...argv], { stdio: 'ignore', env: { PATH: HOST_PATH } })
      p.once('error', () => resolve())
      p.once('exit', () => resolve())
    })
    stopContainer = async () => { await runcCall(['kill', id, 'KILL']) }
    cleanUp = async () => { await runcCall(['delete', '--force', id]) }
    args = ['--pdeathsig', 'SIGKILL', '--', unshare, '--mount', '--net', '--propagation', 'private', '--', '/bin/sh', '-c', SETUP_RUNC, 'sandbox',
      root, scratch, lower, scratchBytes, runc, '--root', state, 'run', '--bundle', bundle, id]
  } else {
    const inner = [
      env, '-i', '--', ...withHome(workload.env, user),
      unshare, '--pid', '--fork', '--kill-child', '--mount-proc', `--root=${root}`, `--wd=${workload.cwd}`,
      ...(user.uid !== 0 || user.gid !== 0 ? [`--setgid=${user.gid}`, `--setuid=${user.uid}`] : []),
      '--', ...workload.args
    ]
    // setpriv: the whole chain dies with this process (the parent-death signal survives the execs).
    args = [
      '--pdeathsig', 'SIGKILL', '--', unshare, '--mount', '--net', '--propagation', 'private', '--', '/bin/sh', '-c', SETUP, 'sandbox',
      root, scratch, lower, scratchBytes, DEFAULTS.devices.join(' '), ...inner
    ]
  }
  const runtime = runc != null ? 'runc' : 'namespaces'
  log.debug({ args: workload.args, cwd: workload.cwd, uid: user.uid, gid: user.gid, runtime }, 'starting the workload')
  const started = performance.now()
  // detached: a session of its own, so the workload has no controlling terminal (/dev/tty is
  // not the caller's) and a Ctrl-C reaches it only through us.
  const proc = spawn(setpriv, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: HOST_PATH, LC_ALL: 'C' }, detached: true })
  proc.stdout?.on('data', (c: Buffer) => components.output?.(c))
  proc.stderr?.on('data', (c: Buffer) => components.output?.(c))
  // 'exit', not 'close': a process that escaped the kill could hold the pipes open for ever.
  const ended = new Promise<{ code: number | null, signal: string | null }>((resolve, reject) => {
    proc.once('error', (err) => reject(new SandboxError(`could not start ${setpriv}: ${err.message}`)))
    proc.once('exit', (code, signal) => resolve({ code, signal }))
  })
  ended.catch(() => {})
  const pid = proc.pid
  if (pid != null) {
    components.onPids?.({ sandbox: pid })
    void watchInit(pid, runc != null ? 'runc' : 'unshare', ended, init => components.onPids?.({ sandbox: pid, init }))
  }
  let timer: NodeJS.Timeout | undefined
  let onAbort: (() => void) | undefined
  const stop = new Promise<'period' | 'abort'>(resolve => {
    timer = setTimeout(() => resolve('period'), options.periodMs)
    onAbort = () => resolve('abort')
    if (options.signal?.aborted === true) onAbort()
    else options.signal?.addEventListener('abort', onAbort, { once: true })
  })
  try {
    const first = await Promise.race([ended, stop])
    if (typeof first === 'object') {
      await drain(proc)
      return { exitCode: first.code, signal: first.signal, stopped: false, durationMs: performance.now() - started, runtime }
    }
    const killWaitMs = options.killWaitMs ?? DEFAULTS.killWaitMs
    if (stopContainer != null) {
      await stopContainer()
      let t: NodeJS.Timeout | undefined
      await Promise.race([ended, new Promise(resolve => { t = setTimeout(resolve, killWaitMs) })])
      clearTimeout(t)
    }
    await killSandbox(proc, ended, killWaitMs)
    await drain(proc)
    if (first === 'abort') throw options.signal?.reason ?? new SandboxError('aborted')
    const end = await ended
    // runc run answers a killed container with 128 + 9 itself
    return { exitCode: null, signal: end.signal ?? 'SIGKILL', stopped: true, durationMs: performance.now() - started, runtime }
  } finally {
    clearTimeout(timer)
    if (onAbort != null) options.signal?.removeEventListener('abort', onAbort)
    if (proc.exitCode == null && proc.signalCode == null) {
      await stopContainer?.()
      await killSandbox(proc, ended, options.killWaitMs ?? DEFAULTS.killWaitMs).catch(err => log.error({ err: (err as Error).message }, 'the sandbox did not go away'))
    }
    // a container runc could not clean up (its process was killed) leaves its cgroup behind
    await cleanUp?.()
  }
}

/**
 * Polls for the process the sandbox forks as its pid namespace's init (a child of `comm`, the
 * last program the sandbox execs), until it is there or the sandbox ended.
 */
async function watchInit (pid: number, comm: string, ended: Promise<unknown>, found: (init: number) => void): Promise<void> {
  let done = false
  void ended.finally(() => { done = true })
  while (!done) {
    const [init] = await childrenOf(pid)
    // Before the last exec the children are the setup's own (mount, mkdir, ...): wait for it.
    const now = await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')
    if (init != null && now.trim() === comm) {
      found(init)
      return
    }
    await new Promise(resolve => setTimeout(resolve, DEFAULTS.pidPollMs))
  }
}

/**
 * Waits a little for the last output of an exited sandbox, then lets its pipes go: whatever
 * still holds them must not keep this process alive.
 */
async function drain (proc: ChildProcess): Promise<void> {
  if (proc.stdout?.readableEnded !== false && proc.stderr?.readableEnded !== false) return
  let timer: NodeJS.Timeout | undefined
  await Promise.race([
    new Promise(resolve => proc.once('close', resolve)),
    new Promise(resolve => { timer = setTimeout(resolve, DEFAULTS.outputGraceMs) })
  ])
  clearTimeout(timer)
  proc.stdout?.destroy()
  proc.stderr?.destroy()
}

/**
 * Kills the sandbox: first the process unshare forked (pid 1 of the workload's pid namespace:
 * the kernel then kills every process in it), then unshare itself; waits until it is gone.
 */
async function killSandbox (proc: ChildProcess, ended: Promise<unknown>, waitMs: number): Promise<void> {
  if (proc.exitCode != null || proc.signalCode != null) return
  // Its forked child is read right before the kill; a kill in the instant between the fork and
  // the child's PR_SET_PDEATHSIG could miss it (it would then live on).
  const pid = proc.pid
  if (pid != null) {
    for (const c of await childrenOf(pid)) {
      try { process.kill(c, 'SIGKILL') } catch {}
    }
  }
  proc.kill('SIGKILL')
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([ended, new Promise((_resolve, reject) => {
      timer = setTimeout(() => reject(new SandboxError(`the workload's sandbox (pid ${String(pid)}) did not exit within ${waitMs} ms of SIGKILL`)), waitMs)
    })])
  } finally {
    clearTimeout(timer)
  }
}
