/**
 * A registry blob as a {@link RangeSource}: size by HEAD, reads by HTTP Range requests (redirects
 * followed, re-authentication on 401 and retries handled by the registry client).
 */
import { ClosedError, RegistryNotFoundError, RegistryProtocolError, Repository, type RegistryClient } from '../oci/index.js'
import type { RangeSource } from './types.js'

export interface RegistryBlobSourceOptions {
  /** The blob size when already known (from its descriptor): saves the HEAD request. */
  size?: number
}

export class RegistryBlobSource implements RangeSource {
  private readonly repo: Repository
  private bytes?: Promise<number>
  private closed = false

  constructor (client: RegistryClient, repository: string, readonly digest: string, options: RegistryBlobSourceOptions = {}) {
    this.repo = new Repository(client, repository)
    if (options.size != null) this.bytes = Promise.resolve(options.size)
  }

  async size (): Promise<number> {
    this.checkOpen()
    if (this.bytes == null) {
      const p = this.repo.blobSize(this.digest).then(n => {
        if (n == null) throw new RegistryNotFoundError(`registry ${this.repo.client.registry}: HEAD blob ${this.digest} in ${this.repo.where}: 404 Not Found`, 404)
        return n
      })
      this.bytes = p
      p.catch(() => { if (this.bytes === p) this.bytes = undefined }) // do not cache failures
    }
    return await this.bytes
  }

  async read (offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    this.checkOpen()
    signal?.throwIfAborted()
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new RangeError(`invalid range ${offset}+${length}`)
    }
    if (length === 0) return new Uint8Array()
    const size = await this.size()
    const end = Math.min(size, offset + length)
    if (offset >= end) return new Uint8Array()
    const want = end - offset
    const res = await this.repo.getBlob(this.digest, { start: offset, end }, signal)
    if (res.status === 416) {
      await res.body?.cancel()
      return new Uint8Array()
    }
    // 200: the server ignored Range and sends the whole blob; skip to the offset and stop early.
    let skip = res.status === 200 ? offset : 0
    const out = new Uint8Array(want)
    let got = 0
    const reader = (res.body as ReadableStream<Uint8Array>).getReader()
    try {
      while (got < want) {
        const { done, value } = await reader.read()
        if (done) break
        let p = value
        if (skip > 0) {
          const n = Math.min(skip, p.length)
          skip -= n
          p = p.subarray(n)
        }
        const n = Math.min(p.length, want - got)
        out.set(p.subarray(0, n), got)
        got += n
      }
    } finally {
      await reader.cancel().catch(() => {})
    }
    signal?.throwIfAborted()
    if (got < want) {
      throw new RegistryProtocolError(`registry ${this.repo.client.registry}: blob ${this.digest} in ${this.repo.where}: range ${offset}-${end - 1} returned ${got} of ${want} bytes`, res.status)
    }
    return out
  }

  async close (): Promise<void> {
    this.closed = true
  }

  private checkOpen (): void {
    if (this.closed) throw new ClosedError(`registry blob ${this.digest} in ${this.repo.where} is closed`)
  }
}
