import pino, { type Logger, type LevelWithSilent } from 'pino'

export type { Logger }
export type LogLevel = LevelWithSilent

/**
 * The process-wide logger: JSON lines on stderr (stdout is for command output), level from
 * `--log-level` or `IPFS_ESTARGZ_LOG_LEVEL`. Components take a child logger as a dependency
 * (`logger.child({ component: 'fs' })`) instead of reaching for this one.
 */
export function createLogger (level: LogLevel = (process.env.IPFS_ESTARGZ_LOG_LEVEL as LogLevel | undefined) ?? 'info'): Logger {
  return pino({ level, base: { pid: process.pid } }, pino.destination({ dest: 2, sync: true }))
}

/** A logger that drops everything, for library use and unit tests. */
export function silentLogger (): Logger {
  return pino({ level: 'silent' })
}
