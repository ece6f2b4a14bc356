import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import type { Reporter, TestModule } from 'vitest/node'

/** Where test processes leave their pid → test file markers (worker-marker.ts). */
export const WORKER_MARKERS_ENV = 'IPFS_ESTARGZ_TEST_WORKER_MARKERS'
/** How long one test file may run, in seconds; over the reporter's option `fileTimeoutS`. */
export const FILE_TIMEOUT_ENV = 'IPFS_ESTARGZ_TEST_FILE_TIMEOUT_S'
const CHECK_EVERY_MS = 15_000

interface Marker { pid: number, test?: string }

/**
 * A reporter that turns a test file that never ends into a failure with a diagnosis, instead of a
 * suite that never ends. vitest's own timeouts are timers inside the test process: a test that
 * blocks that process's event loop (a synchronous call into a FUSE mount the same process serves,
 * say) stops them too, and vitest then waits for the file forever. This runs in vitest's main
 * process: past the limit it prints the file and its current test, the process tree, every thread's
 * kernel wait of the test process and its children, and the FUSE mounts; then it kills that
 * process tree (vitest reports the file as failed and goes on) and lazily unmounts the FUSE mounts
 * left without a server.
 */
export default class HangWatchdog implements Reporter {
  /** Test file → when it was queued to a test process. */
  private readonly running = new Map<string, number>()
  private readonly hung: string[] = []
  private readonly limitMs: number
  private readonly markers = mkdtempSync(join(tmpdir(), 'ipfs-estargz-test-workers-'))
  private readonly timer: NodeJS.Timeout

  constructor (options: { fileTimeoutS: number }) {
    this.limitMs = Number(process.env[FILE_TIMEOUT_ENV] ?? options.fileTimeoutS) * 1000
    // read by the test processes vitest forks from here on
    process.env[WORKER_MARKERS_ENV] = this.markers
    this.timer = setInterval(() => { this.check() }, CHECK_EVERY_MS)
    this.timer.unref()
  }

  onTestModuleQueued (module: TestModule): void {
    this.running.set(module.moduleId, Date.now())
  }

  onTestModuleEnd (module: TestModule): void {
    this.running.delete(module.moduleId)
  }

  onTestRunEnd (): void {
    clearInterval(this.timer)
    rmSync(this.markers, { recursive: true, force: true })
    for (const file of this.hung) say(`HUNG: ${file} was stopped after ${this.limitMs / 1000} s (diagnosis above)`)
  }

  private check (): void {
    const now = Date.now()
    for (const [file, started] of this.running) {
      if (now - started < this.limitMs) continue
      this.running.delete(file)
      const name = relative(process.cwd(), file)
      this.hung.push(name)
      say(`HUNG: ${name} has run ${Math.round((now - started) / 1000)} s (limit ${FILE_TIMEOUT_ENV}=${this.limitMs / 1000})`)
      const marker = this.markerOf(file)
      const pid = marker?.pid
      if (marker != null) say(`its test process ${marker.pid} last started: ${marker.test ?? '(no test yet)'}`)
      const tree = pid != null ? descendants(pid) : []
      section('processes', run('ps', ['-eo', 'pid,ppid,etimes,stat,wchan:24,args', '--forest']).split('\n').map(l => l.slice(0, 220)).join('\n'))
      if (pid == null) say('no test process is known for it (it hung before its setup files ran)')
      for (const p of [pid, ...tree].filter((p): p is number => p != null)) section(`threads of ${p}`, threads(p))
      section('FUSE mounts', fuseMounts().join('\n'))
      for (const p of [...tree.reverse(), pid].filter((p): p is number => p != null)) {
        try { process.kill(p, 'SIGKILL') } catch { /* gone */ }
      }
      // a killed server's mounts answer ENOTCONN once the kernel has let go of its connection:
      // looked for a few times (a mount found stale only after the first look stayed behind)
      if (pid != null) for (const ms of [1_000, 5_000, 20_000]) setTimeout(unmountStale, ms).unref()
    }
  }

  private markerOf (file: string): Marker | undefined {
    for (const name of readdirSync(this.markers)) {
      try {
        const [f, test] = readFileSync(join(this.markers, name), 'utf8').split('\n')
        if (f === file) return { pid: Number(name), test: test !== '' ? test : undefined }
      } catch { /* removed meanwhile */ }
    }
    return undefined
  }
}

function say (line: string): void {
  process.stderr.write(`[hang-watchdog] ${line}\n`)
}

function section (title: string, body: string): void {
  say(`--- ${title}`)
  process.stderr.write(`${body.trimEnd()}\n`)
}

function run (cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 10_000 })
  return `${r.stdout ?? ''}${r.stderr ?? ''}`
}

function read (path: string): string {
  try { return readFileSync(path, 'utf8').trim() } catch (err) { return `(${(err as NodeJS.ErrnoException).code ?? 'unreadable'})` }
}

/** Children first-to-last, depth first. */
function descendants (pid: number): number[] {
  const rows = run('ps', ['-eo', 'pid=,ppid=']).trim().split('\n').map(l => l.trim().split(/\s+/).map(Number))
  const out: number[] = []
  const walk = (p: number): void => {
    for (const [child, parent] of rows) {
      if (parent === p && child != null) { out.push(child); walk(child) }
    }
  }
  walk(pid)
  return out
}

/** Each thread's name, state, kernel wait channel and kernel stack (root only): where it is stuck. */
function threads (pid: number): string {
  let tids: string[]
  try { tids = readdirSync(`/proc/${pid}/task`) } catch { return '(gone)' }
  return tids.map(t => {
    const base = `/proc/${pid}/task/${t}`
    const state = read(`${base}/stat`).replace(/^.*\) /, '').split(' ')[0]
    const stack = read(`${base}/stack`).split('\n').slice(0, 6).map(l => `      ${l}`).join('\n')
    return `  ${t} ${read(`${base}/comm`)} ${state} ${read(`${base}/wchan`)}${blockedOn(pid, read(`${base}/syscall`))}\n${stack}`
  }).join('\n')
}

/**
 * For a thread in read/write (syscall 0/1 on x86-64) on a pipe: the pipe, and every process that
 * holds it (a read that never returns waits on one of them).
 */
function blockedOn (pid: number, syscall: string): string {
  const [nr, fdHex] = syscall.split(' ')
  if (nr !== '0' && nr !== '1') return ''
  const fd = Number.parseInt(fdHex ?? '', 16)
  let target: string
  try { target = readlinkSync(`/proc/${pid}/fd/${fd}`) } catch { return ` (fd ${fd})` }
  if (!target.startsWith('pipe:')) return ` (fd ${fd}: ${target})`
  const holders: string[] = []
  for (const p of readdirSync('/proc').filter(d => /^\d+$/.test(d))) {
    let fds: string[]
    try { fds = readdirSync(`/proc/${p}/fd`) } catch { continue }
    for (const f of fds) {
      try {
        if (readlinkSync(`/proc/${p}/fd/${f}`) === target) holders.push(`${p}(${read(`/proc/${p}/comm`)}) fd ${f}`)
      } catch { /* closed meanwhile */ }
    }
  }
  return ` (${nr === '0' ? 'read' : 'write'} fd ${fd}: ${target}, held by ${holders.join(', ')})`
}

function fuseMounts (): string[] {
  return read('/proc/self/mountinfo').split('\n').filter(l => / - fuse(\.\S+)? /.test(l)).map(l => l.split(' ')[4] ?? l)
}

/** A FUSE mount whose server was killed answers ENOTCONN; detach it so the paths under it can go. */
function unmountStale (): void {
  for (const mp of fuseMounts()) {
    const probe = spawnSync('stat', ['--', mp], { encoding: 'utf8', timeout: 5000 })
    if (!/not connected/i.test(probe.stderr ?? '')) continue
    try {
      execFileSync('umount', ['-l', mp], { stdio: 'ignore', timeout: 10_000 })
      say(`unmounted the stale FUSE mount ${mp}`)
    } catch { /* not ours to unmount, or gone */ }
  }
}
