import { Option } from 'commander'
import { DEFAULTS as ESTARGZ_DEFAULTS } from '../estargz/index.js'
import type { LogLevel } from '../logging.js'
import { parseNonNegativeInt } from './errors.js'

/** The command line's own defaults, in one place. */
export const DEFAULTS = {
  /** A command that runs and ends logs on stderr at this level unless told: warnings and errors only. */
  commandLogLevel: 'warn' as LogLevel,
  /** `layer cat` writes a file in steps of this many bytes, so a large file never sits in memory whole. */
  catStepBytes: 4 << 20,
  /** A terminal's progress lines (push) are redrawn this often. */
  progressIntervalMs: 200,
  /** The rate a progress line shows is measured over this last stretch of time (the current rate, not the mean since the start). */
  progressRateWindowMs: 3_000,
  /** `umount` waits this long for the mount process it signalled to unmount and exit... */
  umountWaitMs: 30_000,
  /** ...looking this often. */
  umountPollMs: 100,
  /** `umount` of a crashed mount looks for at most this many layer mountpoints (it stops at the first missing one). */
  umountMaxLayers: 512,
  /** `mount` leaves a pointer to its state here (by mountpoint), so `umount DIR` needs no `--repo`. */
  mountPointerDir: '/run/ipfs-estargz/mounts',
  /** A stopped FUSE manager exits after this long even if a handle (a FUSE thread, a keep-alive socket) lingers. */
  fuseManagerExitGraceMs: 2_000,
  /** `stats` waits this long for the mounted layers' counters (from the FUSE manager). */
  statsTimeoutMs: 10_000
} as const

/** The levels `--log-level` takes, most severe first. */
const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const

/**
 * `--log-level`. A command that runs and ends logs on stderr, at {@link DEFAULTS.commandLogLevel}
 * unless told, and may be `silent`. A service (`service`: the daemon, the FUSE manager) logs what
 * it does and is never silent; its default comes from its caller (none: its configuration's).
 */
export function logLevelOption (options: { service?: boolean, default?: LogLevel } = {}): Option {
  if (options.service === true) {
    const option = new Option('--log-level <level>', 'log level').choices(LEVELS)
    return options.default != null ? option.default(options.default) : option
  }
  return new Option('--log-level <level>', 'log level on stderr').choices([...LEVELS, 'silent']).default(options.default ?? DEFAULTS.commandLogLevel)
}

/** `--chunk-size` of the eStargz writer (`push`, `layer build`), its default the writer's. */
export function chunkSizeOption (description: string): Option {
  return new Option('--chunk-size <bytes>', description).argParser(parseNonNegativeInt('--chunk-size')).default(ESTARGZ_DEFAULTS.chunkSize)
}

/** `--level`: the eStargz writer's gzip level, its default the writer's. */
export function levelOption (description: string): Option {
  return new Option('--level <n>', description).argParser(parseNonNegativeInt('--level')).default(ESTARGZ_DEFAULTS.compressionLevel)
}

/** Collects a repeatable option's values (`--peer A --peer B`). */
export const collect = (value: string, previous: string[]): string[] => [...previous, value]
