/**
 * Automatic garbage collection defaults, in one place (apart from src/daemon/gc.ts: the
 * configuration, which the FUSE manager loads too, must not pull in the IPFS node).
 */
export const DEFAULTS = {
  /** No cap on the blockstore: nothing is collected unless `gc` is run. */
  maxBlocksBytes: 0,
  /** Seconds between checks of the blockstore's size against its cap. */
  gcIntervalSec: 60
} as const
