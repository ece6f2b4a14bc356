import { commandContext } from './context.js'
import { StdoutClosedError } from './errors.js'

/**
 * Exit code of a command whose stdout reader went away (`ipfs-estargz image ls | head -1`): 128 +
 * SIGPIPE, what a shell reports for a program a closed pipe killed. The command stops quietly.
 */
export const EXIT_STDOUT_CLOSED = 141

let stdoutClosed = false

/**
 * Called once at start: an error on stdout (EPIPE when the reader went away) is remembered and
 * fails the next write with a StdoutClosedError, instead of crashing the process with an
 * unhandled 'error' event and a stack trace.
 */
export function watchStdout (): void {
  process.stdout.on('error', () => { stdoutClosed = true })
}

/** Writes to stdout and waits for it to drain, so large outputs (layer cat) keep backpressure. */
export async function writeStdout (data: Uint8Array | string): Promise<void> {
  const ctx = commandContext.getStore()
  if (ctx != null) {
    await ctx.stdout(data)
    return
  }
  if (stdoutClosed || process.stdout.destroyed) throw new StdoutClosedError()
  if (process.stdout.write(data)) return
  await new Promise<void>((resolve, reject) => {
    const done = (err?: Error): void => {
      process.stdout.off('drain', done)
      process.stdout.off('error', done)
      if (err != null) reject(new StdoutClosedError())
      else resolve()
    }
    process.stdout.once('drain', done)
    process.stdout.once('error', done)
  })
}

/** Is our stdout a terminal? Inside the daemon: the client's stdout. */
export function stdoutIsTTY (): boolean {
  const ctx = commandContext.getStore()
  return ctx != null ? ctx.stdoutIsTTY === true : process.stdout.isTTY === true
}

/** One JSON document per line. */
export async function printJson (value: unknown): Promise<void> {
  await writeStdout(JSON.stringify(value) + '\n')
}

/** A line on stderr (the caller's, for commands run inside the daemon). */
export function writeStderr (line: string): void {
  const ctx = commandContext.getStore()
  if (ctx != null) ctx.stderr(line)
  else process.stderr.write(line)
}
