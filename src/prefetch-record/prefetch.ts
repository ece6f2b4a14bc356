import type { RangeSource } from '../source/index.js'
import { InvalidOptionError } from './errors.js'

/** Learned-prefetch fetching defaults, in one place. */
export const DEFAULTS = {
  /** Pieces being fetched at once: bounds what the prefetch puts on the link beside on-demand reads. */
  concurrency: 4,
  /** A range is fetched in pieces of at most this many bytes (bounds one read's memory and its time on the link). */
  pieceBytes: 1 << 20
} as const

export type PrefetchOptions = { -readonly [K in keyof typeof DEFAULTS]?: number } & { signal?: AbortSignal }

export interface PrefetchResult {
  /** Pieces read (their blocks are in the local blockstore now), and their bytes. */
  pieces: number
  bytes: number
  /** Pieces in all. */
  planned: number
  /** Why it stopped early (a failed read, an abort); undefined when every piece was read. */
  error?: Error
}

/** Splits ranges into pieces of at most `pieceBytes`, keeping their order. */
export function pieces (ranges: Array<[number, number]>, pieceBytes: number): Array<[number, number]> {
  const out: Array<[number, number]> = []
  for (const [offset, length] of ranges) {
    for (let at = 0; at < length; at += pieceBytes) out.push([offset + at, Math.min(pieceBytes, length - at)])
  }
  return out
}

/**
 * Reads `ranges` of `source` in their order, `concurrency` pieces at a time, and throws the bytes
 * away: the point is the blocks the reads fetch into the local blockstore (the source reads
 * through the node's fetch path), where the on-demand reads that follow find them. Before each
 * piece it waits for `idle` (no on-demand read in flight), and reads with the prefetch hint (the
 * block exchange queues its blocks behind on-demand ones), so it never goes ahead of a container's
 * read. The first failed read ends it (the layer's blocks are not to be had now; on-demand reads
 * will say so themselves).
 */
export async function prefetchInOrder (components: { source: RangeSource, idle: (signal?: AbortSignal) => Promise<void> }, ranges: Array<[number, number]>, options: PrefetchOptions = {}): Promise<PrefetchResult> {
  const concurrency = options.concurrency ?? DEFAULTS.concurrency
  const pieceBytes = options.pieceBytes ?? DEFAULTS.pieceBytes
  for (const [k, v] of Object.entries({ concurrency, pieceBytes })) {
    if (!Number.isSafeInteger(v) || v < 1) throw new InvalidOptionError(`learned prefetch: ${k} must be a positive integer, got ${String(v)}`)
  }
  const { source, idle } = components
  const { signal } = options
  const plan = pieces(ranges, pieceBytes)
  const result: PrefetchResult = { pieces: 0, bytes: 0, planned: plan.length }
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < plan.length && result.error == null) {
      await idle(signal)
      if (signal?.aborted === true) { result.error ??= signal.reason as Error; return }
      if (result.error != null || next >= plan.length) return
      const [offset, length] = plan[next++]
      try {
        // a prefetch: the node's exchange sends it behind on-demand wants, never in the requests it keeps for them
        await source.read(offset, length, signal, { prefetch: true })
        result.pieces++
        result.bytes += length
      } catch (err) {
        result.error ??= err as Error
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, plan.length) }, worker))
  return result
}
