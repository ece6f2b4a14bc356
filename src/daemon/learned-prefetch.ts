import { join } from 'node:path'
import type { LearnedPrefetchOptions } from '../prefetch-record/index.js'
import type { DaemonConfig } from './config.js'

/** File in the root holding the newest prefetch record known per layer. */
export const KNOWN_RECORDS_FILE = 'prefetch-records.json'

/** The `[prefetch]` settings as the learned prefetch's options. */
export function learnedPrefetchOptions (config: DaemonConfig): LearnedPrefetchOptions {
  const p = config.prefetch
  return {
    file: join(config.root, KNOWN_RECORDS_FILE),
    recorder: { windowMs: Math.round(p.recordWindowSec * 1000), minRanges: p.minRanges },
    record: { maxRanges: p.maxRanges, maxPrefetchBytes: p.maxBytes },
    protocol: { askTimeoutMs: Math.round(p.askTimeoutSec * 1000) },
    prefetch: { concurrency: p.concurrency },
    // a prefetch read is bounded as a chunk fetch is
    readTimeoutMs: config.fs.fetchTimeoutSec * 1000
  }
}
