import type { IncomingMessage, ServerResponse } from 'node:http'
import { CID } from 'multiformats/cid'
import { ReadTimeoutError } from '../ipfs/errors.js'
import type { Logger } from '../logging.js'
import type { RangeSource, ReadHint } from '../source/types.js'

/** Blob API defaults, in one place. */
export const DEFAULTS = {
  /** Sources kept open (an IPFS source caches its root and interior nodes). */
  maxOpenSources: 64,
  /** Largest range one request may ask for (the chunk reader coalesces up to 16 MiB). */
  maxReadBytes: 64 << 20
} as const

/**
 * Path prefix: `GET /v1/blobs/<cid>/size` → `{"size":N}`; `GET /v1/blobs/<cid>?offset=N&length=M`
 * → bytes; `&priority=background` marks a background read (it waits behind on-demand ones).
 */
export const BLOBS_PREFIX = '/v1/blobs/'

export interface BlobReaderComponents {
  logger: Logger
  /** Opens the blob a CID names (the daemon: an IpfsSource over its Helia node). */
  openSource: (cid: string, signal?: AbortSignal) => Promise<RangeSource>
  /** Told of each on-demand (foreground) read as it starts; what it returns is called when the read ends (learned prefetch records and yields to them). */
  onRead?: (cid: string, offset: number, length: number) => () => void
}

/**
 * Serves byte ranges of IPFS blobs to the FUSE manager, which holds the lazy mounts in its own
 * process so they outlive a daemon restart but has no Helia node of its own. Sources are
 * opened once per CID and kept (LRU) so consecutive chunk reads skip the root lookup.
 */
export class BlobReader {
  private readonly open = new Map<string, Promise<RangeSource>>()
  private readonly log: Logger

  constructor (private readonly components: BlobReaderComponents, private readonly options: { maxOpenSources?: number } = {}) {
    this.log = components.logger.child({ component: 'blob-api' })
  }

  async size (cid: string, signal?: AbortSignal): Promise<number> {
    return await (await this.source(cid, signal)).size()
  }

  async read (cid: string, offset: number, length: number, signal?: AbortSignal, hint?: ReadHint): Promise<Uint8Array> {
    return await (await this.source(cid, signal)).read(offset, length, signal, hint)
  }

  async close (): Promise<void> {
    const all = [...this.open.values()]
    this.open.clear()
    await Promise.allSettled(all.map(async p => await (await p).close?.()))
  }

  private async source (cid: string, signal?: AbortSignal): Promise<RangeSource> {
    let p = this.open.get(cid)
    if (p != null) {
      this.open.delete(cid) // re-insert: most recently used last
      this.open.set(cid, p)
      return await p
    }
    p = this.components.openSource(cid, signal)
    this.open.set(cid, p)
    p.catch(() => { if (this.open.get(cid) === p) this.open.delete(cid) })
    const max = this.options.maxOpenSources ?? DEFAULTS.maxOpenSources
    while (this.open.size > max) {
      const [oldest, evicted] = this.open.entries().next().value as [string, Promise<RangeSource>]
      this.open.delete(oldest)
      evicted.then(async s => await s.close?.(), () => {}).catch((err: Error) => this.log.debug({ err: err.message }, 'closing an evicted source failed'))
    }
    return await p
  }

  /** Handles a request under {@link BLOBS_PREFIX}; answers 400 for bad parameters. */
  handle (req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://local')
    const rest = url.pathname.slice(BLOBS_PREFIX.length)
    const [cidText, what] = rest.split('/')
    const fail = (status: number, error: string): void => {
      if (!res.headersSent) res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ error }))
    }
    if (req.method !== 'GET') { fail(405, 'only GET'); return }
    try {
      CID.parse(cidText)
    } catch {
      fail(400, `not a CID: ${JSON.stringify(cidText)}`)
      return
    }
    const ac = new AbortController()
    res.on('close', () => ac.abort()) // the manager gave up on this read
    const max = DEFAULTS.maxReadBytes
    let job: Promise<void>
    if (what === 'size') {
      job = this.size(cidText, ac.signal).then((size) => { res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ size })) })
    } else if (what === undefined || what === '') {
      const offset = Number(url.searchParams.get('offset'))
      const length = Number(url.searchParams.get('length'))
      const priority = url.searchParams.get('priority') ?? 'foreground'
      if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0 || length > max) {
        fail(400, `offset and length must be integers, 0 ≤ length ≤ ${max}`)
        return
      }
      if (priority !== 'foreground' && priority !== 'background') {
        fail(400, `priority must be foreground or background, got ${JSON.stringify(priority)}`)
        return
      }
      const ended = priority === 'foreground' ? this.components.onRead?.(cidText, offset, length) : undefined
      job = this.read(cidText, offset, length, ac.signal, priority === 'background' ? { background: true } : undefined).then((bytes) => {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bytes.length }).end(bytes)
      })
      if (ended != null) void job.then(ended, ended)
    } else {
      fail(404, `unknown blob resource ${JSON.stringify(what)}`)
      return
    }
    job.catch((err: Error & { code?: string }) => {
      if (ac.signal.aborted) return
      this.log.debug({ cid: cidText, err: err.message }, 'blob request failed')
      const status = err instanceof ReadTimeoutError ? 504 : 502
      fail(status, `${err.message}${err.code != null ? ` (${err.code})` : ''}`)
    })
  }
}
