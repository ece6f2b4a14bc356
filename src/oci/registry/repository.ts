/**
 * The Distribution API v2 operations on one repository: manifests by tag or digest, blobs
 * (whole, by range, resumable streams), blob uploads (monolithic or chunked).
 */
import { isAbortError } from '../../errors.js'
import { digestOf, parseDigest } from '../digest.js'
import { BlobTooLargeError, DigestMismatchError, RegistryConnectionError, RegistryError, RegistryProtocolError, UnknownMediaTypeError } from '../errors.js'
import { isManifestOrIndexMediaType, MANIFEST_ACCEPT } from '../media-types.js'
import type { Descriptor } from '../types.js'
import type { RegistryClient } from './client.js'

export const DEFAULTS = {
  /** Blobs up to this size are uploaded in one PUT; bigger ones in PATCH chunks. */
  monolithicMaxBytes: 16 << 20,
  chunkBytes: 8 << 20,
  /** Times a blob stream is resumed (Range from the last byte received) after a dropped connection. */
  streamResumes: 3,
  /** Largest manifest/index accepted (Distribution refuses to store more than 4 MiB). */
  maxManifestBytes: 4 << 20
} as const

/** A fetched manifest or index with what the registry said about it. */
export interface FetchedManifest {
  bytes: Uint8Array
  descriptor: Descriptor
}

/** A response body, refusing more than `max` bytes (a hostile registry could send gigabytes). */
async function readLimited (res: Response, max: number, what: string): Promise<Uint8Array> {
  const declared = Number(res.headers.get('content-length') ?? NaN)
  if (declared > max) {
    await res.body?.cancel()
    throw new BlobTooLargeError(`${what} is ${declared} bytes, more than the ${max}-byte cap for manifests`)
  }
  const parts: Uint8Array[] = []
  let n = 0
  for await (const p of res.body as unknown as AsyncIterable<Uint8Array>) {
    n += p.length
    if (n > max) throw new BlobTooLargeError(`${what} is more than the ${max}-byte cap for manifests`)
    parts.push(p)
  }
  return Buffer.concat(parts)
}

export class Repository {
  constructor (readonly client: RegistryClient, readonly name: string) {}

  /** `host/repo` for messages. */
  get where (): string {
    return `${this.client.registry}/${this.name}`
  }

  /** GET a manifest or index by tag or digest; verifies it against the digest (requested or announced). */
  async getManifest (reference: string, signal?: AbortSignal): Promise<FetchedManifest> {
    const what = `manifest ${reference} in ${this.where}`
    const res = await this.client.request(this.name, `${this.name}/manifests/${reference}`, { headers: { accept: MANIFEST_ACCEPT }, signal, what })
    const bytes = await readLimited(res, DEFAULTS.maxManifestBytes, what)
    const byDigest = reference.includes(':')
    const actual = digestOf(bytes, byDigest ? parseDigest(reference).algorithm : 'sha256')
    const expected = byDigest ? reference : res.headers.get('docker-content-digest') ?? actual
    if (expected !== actual) throw new DigestMismatchError(expected, expected, actual, this.where)
    let mediaType = (res.headers.get('content-type') ?? '').split(';')[0].trim()
    if (!isManifestOrIndexMediaType(mediaType)) {
      // Some registries answer application/json: trust the document's own mediaType then.
      try { mediaType = (JSON.parse(new TextDecoder().decode(bytes)) as { mediaType?: string }).mediaType ?? mediaType } catch {}
    }
    if (!isManifestOrIndexMediaType(mediaType)) throw new UnknownMediaTypeError(actual, mediaType, `manifest (${what})`)
    return { bytes, descriptor: { mediaType, digest: actual, size: bytes.length } }
  }

  /** HEAD a manifest: whether it exists (and its digest, when the registry says). */
  async manifestExists (reference: string, signal?: AbortSignal): Promise<boolean> {
    const res = await this.client.request(this.name, `${this.name}/manifests/${reference}`, {
      method: 'HEAD', headers: { accept: MANIFEST_ACCEPT }, signal, what: `manifest ${reference} in ${this.where}`, ok: s => (s >= 200 && s < 300) || s === 404
    })
    return res.status !== 404
  }

  /** PUT a manifest or index under a tag or its digest. */
  async putManifest (reference: string, bytes: Uint8Array, mediaType: string, signal?: AbortSignal): Promise<string> {
    const res = await this.client.request(this.name, `${this.name}/manifests/${reference}`, {
      method: 'PUT', headers: { 'content-type': mediaType }, body: bytes, access: 'push', signal, what: `manifest ${reference} in ${this.where}`
    })
    await res.body?.cancel()
    return res.headers.get('docker-content-digest') ?? digestOf(bytes)
  }

  /** HEAD a blob: its size, or `undefined` when the registry does not have it. */
  async blobSize (digest: string, signal?: AbortSignal, access: 'pull' | 'push' = 'pull'): Promise<number | undefined> {
    const res = await this.client.request(this.name, `${this.name}/blobs/${digest}`, {
      method: 'HEAD', signal, access, what: `blob ${digest} in ${this.where}`, ok: s => (s >= 200 && s < 300) || s === 404
    })
    if (res.status === 404) return undefined
    const len = Number(res.headers.get('content-length'))
    if (!Number.isSafeInteger(len) || len < 0) throw new RegistryProtocolError(`registry ${this.client.registry}: HEAD blob ${digest} in ${this.where}: no Content-Length`, res.status)
    return len
  }

  /**
   * GET a blob, or the bytes `[start, end)` of it with a Range request. The response is 206 for a
   * range the server honoured, 200 when it sent the whole blob, 416 when `start` is past the end.
   */
  async getBlob (digest: string, range?: { start: number, end?: number }, signal?: AbortSignal): Promise<Response> {
    const headers: Record<string, string> = {}
    if (range != null) headers.range = `bytes=${range.start}-${range.end != null ? range.end - 1 : ''}`
    return await this.client.request(this.name, `${this.name}/blobs/${digest}`, {
      headers, signal, what: `blob ${digest} in ${this.where}`, ok: s => s === 200 || s === 206 || (range != null && s === 416)
    })
  }

  /**
   * The blob's bytes as a stream that resumes with a Range request from the last byte received
   * when the connection drops mid-body (bounded). Not verified: wrap in `verifyStream`.
   */
  async blobStream (digest: string, signal?: AbortSignal): Promise<AsyncIterable<Uint8Array>> {
    // The first request is made now, so a missing blob or a refused token fails here.
    const first = await this.getBlob(digest, undefined, signal)
    return this.resumingStream(digest, first, signal)
  }

  private async * resumingStream (digest: string, first: Response, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
    let got = 0
    let resumes = 0
    let next: Response | undefined = first
    while (true) {
      const res: Response = next ?? await this.getBlob(digest, got > 0 ? { start: got } : undefined, signal)
      next = undefined
      if (res.status === 416) return
      // A server that ignores Range resends everything: skip what we already have.
      let skip = got > 0 && res.status === 200 ? got : 0
      try {
        for await (const piece of res.body as unknown as AsyncIterable<Uint8Array>) {
          let p = piece
          if (skip > 0) {
            const n = Math.min(skip, p.length)
            skip -= n
            p = p.subarray(n)
            if (p.length === 0) continue
          }
          got += p.length
          yield p
        }
        return
      } catch (err) {
        if (isAbortError(err, signal) || err instanceof RegistryError) throw err
        if (resumes++ >= DEFAULTS.streamResumes) {
          throw new RegistryConnectionError(`registry ${this.client.registry}: GET blob ${digest} in ${this.where}: connection dropped after ${got} bytes (${(err as Error).message})`, 0)
        }
      }
    }
  }

  /** Whether the registry has the blob (HEAD, with push scope so one token serves the upload). */
  async blobExists (digest: string, signal?: AbortSignal): Promise<boolean> {
    return (await this.blobSize(digest, signal, 'push')) != null
  }

  private uploadUrl (res: Response, what: string): string {
    const loc = res.headers.get('location')
    if (loc == null) throw new RegistryProtocolError(`registry ${this.client.registry}: ${what}: upload response without Location`, res.status)
    return new URL(loc, this.client.baseUrl).toString()
  }

  private static withDigest (url: string, digest: string): string {
    const u = new URL(url)
    u.searchParams.set('digest', digest)
    return u.toString()
  }

  /**
   * Uploads a blob whose bytes `open()` yields (called again on a retry). Small blobs go in one
   * PUT; bigger ones in PATCH chunks of `chunkBytes` then a closing PUT.
   */
  async uploadBlob (desc: Descriptor, open: () => AsyncIterable<Uint8Array>, options: { signal?: AbortSignal, monolithicMaxBytes?: number, chunkBytes?: number } = {}): Promise<void> {
    const what = `blob ${desc.digest} in ${this.where}`
    const signal = options.signal
    const start = await this.client.request(this.name, `${this.name}/blobs/uploads/`, { method: 'POST', access: 'push', signal, what: `upload of ${what}`, ok: s => s === 202 })
    await start.body?.cancel()
    let url = this.uploadUrl(start, `POST upload of ${what}`)
    const monolithic = desc.size <= (options.monolithicMaxBytes ?? DEFAULTS.monolithicMaxBytes)
    const chunkBytes = monolithic ? Number.MAX_SAFE_INTEGER : options.chunkBytes ?? DEFAULTS.chunkBytes
    let offset = 0
    let pending: Uint8Array[] = []
    let pendingBytes = 0
    const flush = async (): Promise<void> => {
      const body = Buffer.concat(pending)
      pending = []
      pendingBytes = 0
      const res = await this.client.request(this.name, url, {
        method: 'PATCH',
        headers: { 'content-type': 'application/octet-stream', 'content-range': `${offset}-${offset + body.length - 1}` },
        body, access: 'push', signal, what: `chunk at ${offset} of ${what}`, ok: s => s === 202
      })
      await res.body?.cancel()
      url = this.uploadUrl(res, `PATCH ${what}`)
      offset += body.length
    }
    for await (const piece of open()) {
      pending.push(piece)
      pendingBytes += piece.length
      while (pendingBytes >= chunkBytes) {
        const all = Buffer.concat(pending)
        pending = [all.subarray(0, chunkBytes)]
        pendingBytes = chunkBytes
        const rest = all.subarray(chunkBytes)
        await flush()
        if (rest.length > 0) { pending = [rest]; pendingBytes = rest.length }
      }
    }
    let body: Uint8Array | undefined
    if (monolithic) {
      body = Buffer.concat(pending)
    } else if (pendingBytes > 0) {
      await flush()
    }
    const total = monolithic ? (body as Uint8Array).length : offset
    if (total !== desc.size) throw new RegistryProtocolError(`upload of ${what}: the source gave ${total} bytes, the descriptor says ${desc.size}`, 0)
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream' }
    const fin = await this.client.request(this.name, Repository.withDigest(url, desc.digest), {
      method: 'PUT', headers, body: body ?? new Uint8Array(), access: 'push', signal, what: `upload of ${what}`, ok: s => s === 201 || s === 204
    })
    await fin.body?.cancel()
  }
}
