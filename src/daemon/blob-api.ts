import { CID } from 'multiformats/cid'
import { BadRequestError } from '../errors.js'
import { ReadTimeoutError } from '../ipfs/index.js'
import type { Logger } from '../logging.js'
import { OpenLru } from '../open-lru.js'
import type { RangeSource, ReadHint } from '../source/index.js'
import type { Call, Route } from '../unix-http.js'
import { ControlApiError } from './errors.js'

/** Blob API defaults, in one place. */
export const DEFAULTS = {
  /** Sources kept open (an IPFS source caches its root and interior nodes). */
  maxOpenSources: 64,
  /** Largest range one request may ask for (the chunk reader coalesces up to 16 MiB), and most bytes of a request's ranges together. */
  maxReadBytes: 64 << 20,
  /** Ranges one request may name (`ranges=`)... */
  maxRanges: 256,
  /** ...read this many at a time, in the order named. */
  rangeConcurrency: 8
} as const

/**
 * Path prefix: `GET /v1/blobs/<cid>/size` → `{"size":N}`; `GET /v1/blobs/<cid>?offset=N&length=M`
 * → bytes; `GET /v1/blobs/<cid>?ranges=O:L,O:L,…` → the ranges' bytes back to back, each cut at
 * the blob's end (many small prefetch reads in one round trip); `&priority=background` marks a
 * background read (it waits for an idle link), `&priority=prefetch` a prefetch (right behind
 * on-demand reads, and not the workload's own). Errors answer the one error body of
 * src/unix-http.ts.
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
  private readonly open: OpenLru<RangeSource>
  private readonly log: Logger

  constructor (private readonly components: BlobReaderComponents, options: { maxOpenSources?: number } = {}) {
    this.log = components.logger.child({ component: 'blob-api' })
    this.open = new OpenLru<RangeSource>({
      max: options.maxOpenSources ?? DEFAULTS.maxOpenSources,
      close: async (s) => { await s.close?.() },
      onCloseError: (err) => this.log.debug({ err: (err as Error).message }, 'closing a source failed')
    })
  }

  async size (cid: string, signal?: AbortSignal): Promise<number> {
    return await (await this.source(cid, signal)).size()
  }

  async read (cid: string, offset: number, length: number, signal?: AbortSignal, hint?: ReadHint): Promise<Uint8Array> {
    return await (await this.source(cid, signal)).read(offset, length, signal, hint)
  }

  /**
   * Reads `ranges` `rangeConcurrency` at a time, started in the order given: a prefetch names its
   * ranges in the order a workload will read them, and all at once they would reach the block
   * exchange together, their blocks asked of the peers in no particular order.
   */
  private async readInOrder (cid: string, ranges: Array<[number, number]>, signal: AbortSignal, hint?: ReadHint): Promise<Uint8Array[]> {
    const out: Uint8Array[] = new Array(ranges.length)
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < ranges.length) {
        const i = next++
        try {
          out[i] = await this.read(cid, ranges[i][0], ranges[i][1], signal, hint)
        } catch (err) {
          next = ranges.length // the answer fails: start no more
          throw err
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(DEFAULTS.rangeConcurrency, ranges.length) }, worker))
    return out
  }

  async close (): Promise<void> {
    await this.open.clear()
  }

  /** The source of `cid`, opened once and kept (LRU) so consecutive chunk reads skip the root lookup. */
  private async source (cid: string, signal?: AbortSignal): Promise<RangeSource> {
    return await this.open.get(cid, async () => await this.components.openSource(cid, signal))
  }

  /** The blob routes, served on the control socket: GET under {@link BLOBS_PREFIX}. */
  routes (): Route[] {
    return [{
      method: 'GET',
      path: BLOBS_PREFIX,
      prefix: true,
      handle: async (call) => await this.answer(call),
      // a bad parameter is 400, an unknown resource 404; the blob's own failure: a read timeout is 504, anything else 502
      statusOf: (err) => err instanceof BadRequestError ? err.status : err instanceof ControlApiError ? err.status : err instanceof ReadTimeoutError ? 504 : 502
    }]
  }

  private async answer ({ url, signal }: Call): Promise<{ size: number } | Uint8Array> {
    const [cidText, what] = url.pathname.slice(BLOBS_PREFIX.length).split('/')
    try {
      CID.parse(cidText)
    } catch {
      throw new BadRequestError(`not a CID: ${JSON.stringify(cidText)}`)
    }
    let job: () => Promise<{ size: number } | Uint8Array>
    if (what === 'size') {
      job = async () => ({ size: await this.size(cidText, signal) })
    } else if (what === undefined || what === '') {
      const priority = url.searchParams.get('priority') ?? 'foreground'
      if (priority !== 'foreground' && priority !== 'background' && priority !== 'prefetch') {
        throw new BadRequestError(`priority must be foreground, prefetch or background, got ${JSON.stringify(priority)}`)
      }
      const hint = priority === 'background' ? { background: true } : priority === 'prefetch' ? { prefetch: true } : undefined
      const ranges = url.searchParams.get('ranges')
      if (ranges != null) {
        const list = parseRanges(ranges)
        job = async () => Buffer.concat(await this.readInOrder(cidText, list, signal, hint))
      } else {
        const offset = Number(url.searchParams.get('offset'))
        const length = Number(url.searchParams.get('length'))
        checkRange(offset, length)
        // only a container's own reads are its record
        const ended = priority === 'foreground' ? this.components.onRead?.(cidText, offset, length) : undefined
        job = async () => {
          try {
            return await this.read(cidText, offset, length, signal, hint)
          } finally {
            ended?.()
          }
        }
      }
    } else {
      throw new ControlApiError(`unknown blob resource ${JSON.stringify(what)}`, 404)
    }
    try {
      return await job()
    } catch (err) {
      if (!signal.aborted) this.log.debug({ cid: cidText, err: (err as Error).message }, 'blob request failed')
      throw err
    }
  }
}

/** One range: non-negative safe integers, at most `maxReadBytes` long. */
function checkRange (offset: number, length: number): void {
  const max = DEFAULTS.maxReadBytes
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0 || length > max) {
    throw new BadRequestError(`offset and length must be integers, 0 ≤ length ≤ ${max}`)
  }
}

/** `O:L,O:L,…`: at most `maxRanges` ranges of at most `maxReadBytes` together. */
function parseRanges (text: string): Array<[number, number]> {
  const parts = text.split(',')
  if (text === '' || parts.length > DEFAULTS.maxRanges) throw new BadRequestError(`ranges must name 1 to ${DEFAULTS.maxRanges} OFFSET:LENGTH pairs`)
  let total = 0
  return parts.map((p) => {
    const m = /^(\d{1,16}):(\d{1,16})$/.exec(p)
    if (m == null) throw new BadRequestError(`ranges: ${JSON.stringify(p.slice(0, 40))} is not OFFSET:LENGTH`)
    const range: [number, number] = [Number(m[1]), Number(m[2])]
    checkRange(range[0], range[1])
    total += range[1]
    if (total > DEFAULTS.maxReadBytes) throw new BadRequestError(`ranges ask for more than ${DEFAULTS.maxReadBytes} bytes together`)
    return range
  })
}
