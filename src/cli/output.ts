import { commandContext } from './context.js'

/** Writes to stdout and waits for it to drain, so large outputs (layer cat) keep backpressure. */
export async function writeStdout (data: Uint8Array | string): Promise<void> {
  const ctx = commandContext.getStore()
  if (ctx != null) {
    await ctx.stdout(data)
    return
  }
  if (process.stdout.write(data)) return
  await new Promise<void>((resolve, reject) => {
    const done = (err?: Error): void => {
      process.stdout.off('drain', done)
      process.stdout.off('error', done)
      if (err != null) reject(err)
      else resolve()
    }
    process.stdout.once('drain', done)
    process.stdout.once('error', done)
  })
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
