import { writeSync } from 'node:fs'
import pino, { type Logger, type LevelWithSilent } from 'pino'

export type { Logger }
export type LogLevel = LevelWithSilent

/** How log lines are written: JSON lines, or one readable line each for a person at a terminal. */
export type LogFormat = 'json' | 'pretty'

/** Environment variable that picks the format (`json`, `pretty`); unset: pretty on a terminal. */
export const LOG_FORMAT_ENV = 'IPFS_ESTARGZ_LOG_FORMAT'

/** The format `$IPFS_ESTARGZ_LOG_FORMAT` asks for, else pretty when stderr is a terminal. */
export function logFormat (env: NodeJS.ProcessEnv = process.env, isTty: boolean = process.stderr.isTTY === true): LogFormat {
  const asked = env[LOG_FORMAT_ENV]
  if (asked === 'json' || asked === 'pretty') return asked
  return isTty ? 'pretty' : 'json'
}

/**
 * The process-wide logger: on stderr (stdout is for command output), JSON lines unless a person
 * reads them (see {@link logFormat}), level from `--log-level` or `IPFS_ESTARGZ_LOG_LEVEL`.
 * Components take a child logger as a dependency (`logger.child({ component: 'fs' })`) instead
 * of reaching for this one. Every line carries the process's pid once: a `pid` a caller logs
 * (another process's) is renamed `otherPid`, never written as a second `pid` key.
 */
export function createLogger (level: LogLevel = (process.env.IPFS_ESTARGZ_LOG_LEVEL as LogLevel | undefined) ?? 'info', format: LogFormat = logFormat()): Logger {
  const options = { level, base: { pid: process.pid }, formatters: { log: renamePid } }
  const logger: Logger = format === 'pretty' ? pino(options, prettyStream(2)) : pino(options, pino.destination({ dest: 2, sync: true }))
  // pino applies no formatter to a child's bindings: rename there. Children are made from their
  // parent's prototype, so every descendant inherits this `child` (called with itself as `this`).
  type Child = (this: Logger, bindings: Record<string, unknown>, opts?: unknown) => Logger
  const child = logger.child as unknown as Child
  const renaming: Child = function (bindings, opts) { return child.call(this, renamePid(bindings), opts) }
  logger.child = renaming as unknown as Logger['child']
  return logger
}

/** A logger that drops everything, for library use and unit tests. */
export function silentLogger (): Logger {
  return pino({ level: 'silent' })
}

function renamePid (obj: Record<string, unknown>): Record<string, unknown> {
  if (!('pid' in obj)) return obj
  const { pid, ...rest } = obj
  return { ...rest, otherPid: pid }
}

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' }
/** Keys every line has, shown in the line's head rather than as key=value. */
const HEAD_KEYS = new Set(['level', 'time', 'pid', 'hostname', 'msg'])

/** One JSON log line as a person reads it: `12:03:04.567 WARN  message  key=value …`. */
export function prettyLine (json: string): string {
  let o: Record<string, unknown>
  try {
    o = JSON.parse(json) as Record<string, unknown>
  } catch {
    return json.endsWith('\n') ? json : `${json}\n`
  }
  const time = typeof o.time === 'number' ? new Date(o.time).toISOString().slice(11, 23) : ''
  const level = (LEVELS[o.level as number] ?? String(o.level)).padEnd(5)
  const rest = Object.entries(o).filter(([k]) => !HEAD_KEYS.has(k)).map(([k, v]) => `${k}=${typeof v === 'string' && !/[\s"=]/.test(v) ? v : JSON.stringify(v)}`)
  return `${time} ${level} ${String(o.msg ?? '')}${rest.length > 0 ? `  ${rest.join(' ')}` : ''}\n`
}

/**
 * A destination that writes each line pretty, synchronously as pino.destination's sync mode
 * does (a log line is never lost when the process exits right after it). Ours rather than
 * pino-pretty's: a line formatter of a few lines needs no worker thread or dependency.
 */
function prettyStream (fd: number): { write: (line: string) => boolean } {
  return {
    write: (line: string) => {
      try {
        writeSync(fd, prettyLine(line.trimEnd()))
      } catch {} // stderr gone (a closed terminal): nothing to tell
      return true
    }
  }
}
