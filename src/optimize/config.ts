/** Every default and bound of workload optimization, in one place. */
export const DEFAULTS = {
  /** How long the workload runs before it is stopped (as the reference's `--period`). */
  periodSec: 10,
  /** Upper bound of `--period`. */
  maxPeriodSec: 3600,
  /** After the workload is killed, how long its sandbox gets to go away before this is an error. */
  killWaitMs: 10_000,
  /** How often the sandbox looks for the workload's first process (to report its pid). */
  pidPollMs: 20,
  /** After the sandbox process reported its result, how long it gets to exit before it is killed. */
  childExitMs: 10_000,
  /** After the sandbox exited, how long its last output may take to arrive. */
  outputGraceMs: 1_000,
  /** Size of the tmpfs the workload's writes go to (the overlay's upper layer). */
  scratchBytes: 512 << 20,
  /** Largest `--record-in` or `--prefetch-list` file read. */
  maxInputBytes: 64 << 20,
  /** Most access entries taken from a record or a prefetch list, and recorded from a run. */
  maxEntries: 1_000_000,
  /** Longest path accepted in a record or a prefetch list (PATH_MAX). */
  maxPathBytes: 4096,
  /** gzip level of the throw-away eStargz copy the workload runs on (never published). */
  profileLevel: 1,
  /** PATH given to the workload when the image's config sets none (containerd's default). */
  defaultPath: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  /** Most processes a workload run by runc may have at once. */
  maxPids: 4096,
  /** Host devices bound into the sandbox's /dev (nothing else of the host's /dev is visible). */
  devices: ['null', 'zero', 'full', 'random', 'urandom', 'tty'] as readonly string[]
} as const
