import { BlobReadError } from './errors.js'

export interface ReadBatchOptions {
  /** Ranges one request may carry (the daemon takes up to 256)... */
  maxRanges: number
  /** ...and at most this many bytes of them together. */
  maxBytes: number
}

export interface ReadBatchComponents {
  /** Reads one range (a request of its own). */
  readOne: (offset: number, length: number, signal?: AbortSignal) => Promise<Uint8Array>
  /** Reads several ranges with one request: their bytes back to back, each cut at the blob's end. */
  readMany: (ranges: Array<[number, number]>, signal: AbortSignal) => Promise<Uint8Array>
  /** The blob's size, to know where the answer of a range cut at the end stops. */
  size: () => Promise<number>
}

interface Pending {
  offset: number
  length: number
  signal?: AbortSignal
  resolve: (bytes: Uint8Array) => void
  reject: (err: unknown) => void
}

/**
 * Reads of one blob started in the same turn of the event loop, sent as one request: a prefetch
 * step of files scattered over a layer (a learned record) starts a read per file at once, and
 * each would otherwise cost its own round trip to the daemon and its own HTTP exchange there.
 * A read that gives up (its signal) is answered at once; the request is cancelled once all of
 * its reads have.
 */
export class ReadBatch {
  private queue: Pending[] = []

  constructor (private readonly components: ReadBatchComponents, private readonly options: ReadBatchOptions) {}

  async read (offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    signal?.throwIfAborted()
    return await new Promise<Uint8Array>((resolve, reject) => {
      if (this.queue.length === 0) process.nextTick(() => { this.flush() })
      this.queue.push({ offset, length, signal, resolve, reject })
    })
  }

  private flush (): void {
    const all = this.queue
    this.queue = []
    let batch: Pending[] = []
    let bytes = 0
    for (const p of all) {
      if (batch.length > 0 && (batch.length >= this.options.maxRanges || bytes + p.length > this.options.maxBytes)) {
        this.send(batch)
        batch = []
        bytes = 0
      }
      batch.push(p)
      bytes += p.length
    }
    if (batch.length > 0) this.send(batch)
  }

  private send (batch: Pending[]): void {
    if (batch.length === 1) {
      const p = batch[0]
      this.components.readOne(p.offset, p.length, p.signal).then(p.resolve, p.reject)
      return
    }
    const ac = new AbortController()
    let waiting = batch.length
    const onAbort = new Map<Pending, () => void>()
    const settle = (p: Pending, outcome: { bytes: Uint8Array } | { err: unknown }): void => {
      const abort = onAbort.get(p)
      if (abort == null) return // settled already
      onAbort.delete(p)
      p.signal?.removeEventListener('abort', abort)
      if ('bytes' in outcome) p.resolve(outcome.bytes)
      else p.reject(outcome.err)
    }
    for (const p of batch) {
      const abort = (): void => {
        settle(p, { err: p.signal?.reason })
        if (--waiting === 0) ac.abort()
      }
      onAbort.set(p, abort)
      p.signal?.addEventListener('abort', abort, { once: true })
    }
    void (async () => {
      try {
        const [answer, size] = await Promise.all([this.components.readMany(batch.map(p => [p.offset, p.length]), ac.signal), this.components.size()])
        const lengths = batch.map(p => Math.max(0, Math.min(p.length, size - p.offset)))
        const expected = lengths.reduce((a, b) => a + b, 0)
        if (answer.length !== expected) throw new BlobReadError(`daemon blob API: ${answer.length} bytes for ${batch.length} ranges of ${expected}`, { status: 502 })
        let at = 0
        for (const [i, p] of batch.entries()) {
          settle(p, { bytes: answer.subarray(at, at + lengths[i]) })
          at += lengths[i]
        }
      } catch (err) {
        for (const p of batch) settle(p, { err })
      }
    })()
  }
}
