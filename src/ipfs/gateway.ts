import type { CID } from 'multiformats/cid'
import type { Logger } from '../logging.js'
import { AbortError, GatewayBlockTooLargeError, InvalidOptionError } from './errors.js'
import { deadline } from '../signals.js'

/** Gateway-stage defaults, in one place. */
export const DEFAULTS = {
  /** One gateway request (headers and body) fails after this many ms; the next gateway is asked. */
  requestTimeout: 10_000,
  /** Largest block accepted from a gateway (bitswap's limit; our leaves are ≤ 1 MiB). */
  maxBlockSize: 4 * 1024 * 1024
} as const

export interface GatewayOptions {
  requestTimeout?: number
  maxBlockSize?: number
}

export interface GatewayGetOptions {
  signal?: AbortSignal
  /** Checks the bytes against the CID; throws when they do not match. */
  validate: (bytes: Uint8Array) => Promise<void> | void
}

/**
 * The last stage of the fetch path: trustless HTTP gateways and mirrors
 * (`GET <base>/ipfs/<cid>?format=raw`, `Accept: application/vnd.ipld.raw`), asked one after the
 * other in the configured order. Every answer is bounded in size and time and checked against
 * the CID before it is returned; a gateway that fails, answers non-200 or sends wrong bytes is
 * skipped for this block.
 */
export class GatewayClient {
  private readonly bases: string[]
  private readonly opts: Required<GatewayOptions>
  private readonly log: Logger

  constructor (components: { logger: Logger }, gateways: readonly string[], options: GatewayOptions = {}) {
    this.log = components.logger.child({ component: 'gateway' })
    this.opts = { ...DEFAULTS, ...options }
    for (const [k, v] of Object.entries(this.opts)) {
      if (!Number.isInteger(v) || v < 1) throw new InvalidOptionError(`gateway: ${k} must be a positive integer, got ${String(v)}`)
    }
    this.bases = gateways.map((g) => {
      let url: URL
      try {
        url = new URL(g)
      } catch {
        throw new InvalidOptionError(`gateway ${JSON.stringify(g)} is not a URL`)
      }
      if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new InvalidOptionError(`gateway ${g}: only http and https URLs`)
      if (url.search !== '' || url.hash !== '') throw new InvalidOptionError(`gateway ${g}: give a base URL, without query or fragment`)
      return url.toString().replace(/\/+$/, '')
    })
  }

  get size (): number {
    return this.bases.length
  }

  /** The verified block from the first gateway that has it, else undefined. */
  async get (cid: CID, options: GatewayGetOptions): Promise<Uint8Array | undefined> {
    for (const base of this.bases) {
      if (aborted(options.signal)) throw new AbortError(`block ${cid.toString()}: aborted`)
      try {
        const bytes = await this.fetchOne(base, cid, options.signal)
        if (bytes == null) continue
        await options.validate(bytes)
        return bytes
      } catch (err) {
        if (aborted(options.signal)) throw new AbortError(`block ${cid.toString()}: aborted`)
        this.log.debug({ gateway: base, cid: cid.toString(), err: (err as Error).message }, 'gateway did not deliver the block')
      }
    }
    return undefined
  }

  private async fetchOne (base: string, cid: CID, signal?: AbortSignal): Promise<Uint8Array | undefined> {
    const d = deadline(this.opts.requestTimeout, signal)
    try {
      return await this.fetchWithin(base, cid, d.signal)
    } finally {
      d.clear()
    }
  }

  private async fetchWithin (base: string, cid: CID, s: AbortSignal): Promise<Uint8Array | undefined> {
    const res = await fetch(`${base}/ipfs/${cid.toString()}?format=raw`, {
      headers: { accept: 'application/vnd.ipld.raw' },
      // A redirect could point anywhere; a gateway that moved is reconfigured, not followed.
      redirect: 'error',
      signal: s
    })
    if (res.status !== 200 || res.body == null) {
      await res.body?.cancel().catch(() => {})
      return undefined
    }
    const declared = Number(res.headers.get('content-length') ?? NaN)
    const max = this.opts.maxBlockSize
    if (declared > max) {
      await res.body.cancel().catch(() => {})
      throw new GatewayBlockTooLargeError(`block of ${declared} bytes exceeds the limit of ${max}`)
    }
    const parts: Uint8Array[] = []
    let n = 0
    const reader = res.body.getReader()
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      n += value.byteLength
      if (n > max) {
        await reader.cancel().catch(() => {})
        throw new GatewayBlockTooLargeError(`block over the limit of ${max} bytes`)
      }
      parts.push(value)
    }
    return Buffer.concat(parts, n)
  }
}

const aborted = (signal?: AbortSignal): boolean => signal?.aborted === true
