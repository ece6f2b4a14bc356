/**
 * The blocks a write-behind store has accepted but not yet made durable (the pack and LMDB
 * stores): reads see them here before the disk does, writers wait while too many bytes are
 * queued, and a failed write of a pushed block is kept for the next writer or flush to throw.
 * The store decides what "durable" means and calls `settle` when a write is over.
 */
export class WriteBehindQueue {
  private readonly pending = new Map<string, { bytes: Uint8Array, write: Promise<void> }>()
  private bytes = 0
  private readonly drained: Array<() => void> = []
  private failure: unknown

  /** `maxBytes`: writers wait in `room()` while more than this is queued. */
  constructor (private readonly maxBytes: number) {}

  /** The queued block under `key`: its bytes, and its write (which settles, never rejects). */
  get (key: string): { bytes: Uint8Array, write: Promise<void> } | undefined {
    return this.pending.get(key)
  }

  has (key: string): boolean {
    return this.pending.has(key)
  }

  /** Blocks queued. */
  get size (): number {
    return this.pending.size
  }

  /** Waits while more than `maxBytes` are queued; throws a write failure seen while it waited. */
  async room (): Promise<void> {
    while (this.bytes > this.maxBytes) {
      await new Promise<void>(resolve => { this.drained.push(resolve) })
      this.throwFailure()
    }
  }

  /** Queues `bytes` under `key`; `write` must settle (not reject) once the write is over. */
  add (key: string, bytes: Uint8Array, write: Promise<void>): void {
    this.pending.set(key, { bytes, write })
    this.bytes += bytes.byteLength
  }

  /** The write under `key` is over (`n` its bytes): it leaves the queue, and waiting writers go on. */
  settle (key: string, n: number): void {
    this.pending.delete(key)
    this.bytes -= n
    if (this.bytes <= this.maxBytes) for (const wake of this.drained.splice(0)) wake()
  }

  /** A write failed: the first failure is thrown, once, by the next `throwFailure`. */
  fail (err: unknown): void {
    this.failure ??= err
  }

  throwFailure (): void {
    if (this.failure == null) return
    const err = this.failure
    this.failure = undefined
    throw err
  }

  /** Resolves once every write queued so far (and any queued meanwhile) has settled. */
  async drain (): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending.values()].map(async p => await p.write))
  }
}
