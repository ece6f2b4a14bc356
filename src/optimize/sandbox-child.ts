/**
 * The process a sandbox runs in (forked by `runInSandbox`): it gets its job over IPC, mounts the
 * layers, runs the workload, sends what it read and how it ended, and exits without unmounting.
 */
import '../polyfill.js'
import { createLogger, type LogLevel } from '../logging.js'
import { AccessRecorder, type RecordEntry } from './record.js'
import { runSandbox, type SandboxLayer, type SandboxResult, type SandboxRuntime } from './sandbox-run.js'
import type { Workload } from './workload.js'

/** The job, from the parent. */
export interface StartMessage {
  t: 'start'
  dir: string
  layers: SandboxLayer[]
  workload: Workload
  manifestDigest: string
  periodMs: number
  scratchBytes?: number
  killWaitMs?: number
  maxEntries?: number
  logLevel: LogLevel
  runtime?: SandboxRuntime
}

/** What the child sends. */
export type ChildMessage =
  | { t: 'output', data: string }
  | { t: 'pids', sandbox: number, init?: number }
  | { t: 'result', result: SandboxResult, entries: RecordEntry[], dropped: number }
  | { t: 'error', error: { name: string, code?: string, message: string } }

const ac = new AbortController()
let started = false

async function send (m: ChildMessage): Promise<void> {
  await new Promise<void>(resolve => {
    if (process.send == null || !process.connected) { resolve(); return }
    process.send(m, undefined, {}, () => resolve())
  })
}

async function run (job: StartMessage): Promise<void> {
  const logger = createLogger(job.logLevel)
  const recorder = new AccessRecorder(job.manifestDigest, job.layers.length, job.maxEntries)
  try {
    const result = await runSandbox({
      logger,
      output: (chunk) => { void send({ t: 'output', data: Buffer.from(chunk).toString('utf8') }) },
      onPids: (pids) => { void send({ t: 'pids', ...pids }) }
    }, job.layers, job.workload, {
      dir: job.dir, periodMs: job.periodMs, scratchBytes: job.scratchBytes, killWaitMs: job.killWaitMs, runtime: job.runtime, onAccess: i => recorder.hook(i), signal: ac.signal
    })
    await send({ t: 'result', result, entries: recorder.entries(), dropped: recorder.droppedEntries })
  } catch (err) {
    const e = err as Error & { code?: unknown }
    await send({ t: 'error', error: { name: e.name ?? 'Error', code: typeof e.code === 'string' ? e.code : undefined, message: e.message ?? String(err) } })
  }
  // Exit with the FUSE mounts still up: the parent detaches them (see runSandbox).
  process.exit(0)
}

process.on('message', (m: { t?: string }) => {
  if (m.t === 'start' && !started) {
    started = true
    void run(m as StartMessage)
  } else if (m.t === 'stop') {
    ac.abort()
  }
})
// Ctrl-C reaches the whole process group: the parent decides, and tells this process to stop.
process.on('SIGINT', () => {})
process.on('SIGTERM', () => {})
// The parent went away: stop the workload (the exit then takes the mounts down).
process.on('disconnect', () => {
  if (!started) process.exit(0)
  ac.abort()
})
