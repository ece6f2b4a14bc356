/** A mistake in how a command was called (exit code 2, like commander's own usage errors). */
export class UsageError extends Error {
  readonly code = 'ERR_USAGE'
  override readonly name = 'UsageError'
}

/** Parses a non-negative integer option (`--chunk-size 4194304`, `--offset 0`). */
export function parseNonNegativeInt (what: string): (value: string) => number {
  return (value: string): number => {
    if (!/^\d+$/.test(value)) throw new UsageError(`${what} must be a non-negative integer, got ${JSON.stringify(value)}`)
    const n = Number(value)
    if (!Number.isSafeInteger(n)) throw new UsageError(`${what} is too large: ${value}`)
    return n
  }
}

/** One line for the terminal: the message, and the stable code when the error has one. */
export function describeError (err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code
    const msg = err.message.split('\n')[0]
    return typeof code === 'string' && code !== 'ERR_USAGE' && !msg.includes(code) ? `${msg} (${code})` : msg
  }
  return String(err)
}
