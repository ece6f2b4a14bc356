/**
 * Pull-based reader over an async byte stream with exact-length reads, for parsing formats
 * (tar) whose records straddle the stream's chunk boundaries.
 */
export class ByteReader {
  private readonly iterator: AsyncIterator<Uint8Array>
  private chunks: Uint8Array[] = []
  private buffered = 0
  private ended = false
  /** Bytes consumed so far. */
  position = 0

  constructor (source: AsyncIterable<Uint8Array>) {
    this.iterator = source[Symbol.asyncIterator]()
  }

  private async pull (): Promise<boolean> {
    if (this.ended) return false
    const { done, value } = await this.iterator.next()
    if (done === true) {
      this.ended = true
      return false
    }
    if (value.length > 0) {
      this.chunks.push(value)
      this.buffered += value.length
    }
    return true
  }

  /** Reads exactly `n` bytes, or fewer only when the stream ends first. */
  async read (n: number): Promise<Uint8Array> {
    while (this.buffered < n && await this.pull()) { /* fill */ }
    const take = Math.min(n, this.buffered)
    if (take === 0) return new Uint8Array(0)
    const first = this.chunks[0]
    let out: Uint8Array
    if (first.length >= take) {
      out = first.subarray(0, take)
      this.consumeFront(take)
    } else {
      out = new Uint8Array(take)
      let filled = 0
      while (filled < take) {
        const c = this.chunks[0]
        const k = Math.min(c.length, take - filled)
        out.set(c.subarray(0, k), filled)
        filled += k
        this.consumeFront(k)
      }
    }
    return out
  }

  /** Returns the next buffered piece of at most `max` bytes without copying; `null` at the end. */
  async readUpTo (max: number): Promise<Uint8Array | null> {
    if (max <= 0) return new Uint8Array(0)
    while (this.buffered === 0) {
      if (!await this.pull()) return null
    }
    const first = this.chunks[0]
    const k = Math.min(first.length, max)
    const out = first.subarray(0, k)
    this.consumeFront(k)
    return out
  }

  /** Skips `n` bytes; returns how many were actually skipped (fewer at the end of the stream). */
  async skip (n: number): Promise<number> {
    let left = n
    while (left > 0) {
      const piece = await this.readUpTo(left)
      if (piece == null) break
      left -= piece.length
    }
    return n - left
  }

  /** Lets the source release its resources (e.g. close a file) when parsing stops early. */
  async close (): Promise<void> {
    this.chunks = []
    this.buffered = 0
    if (!this.ended) {
      this.ended = true
      await this.iterator.return?.()
    }
  }

  private consumeFront (k: number): void {
    const first = this.chunks[0]
    if (k === first.length) this.chunks.shift()
    else this.chunks[0] = first.subarray(k)
    this.buffered -= k
    this.position += k
  }
}
