import { setTimeout as sleep } from 'node:timers/promises'
import type { RangeSource, ReadHint } from '../source/index.js'
import { UnixHttpClient, type ClientErrors } from '../unix-http.js'
import { BlobAnswerCutError, BlobReadError, BlobSourceUnavailableError } from './errors.js'
import { ReadBatch } from './read-batch.js'

/** Blob client defaults, in one place. */
export const DEFAULTS = {
  /** While the daemon is away (restarting), a read retries this often... */
  retryIntervalMs: 250,
  /** ...for at most this long (the chunk reader's own fetch timeout usually ends it first). */
  maxWaitMs: 60_000,
  /** Keep-alive connections to the daemon (one per concurrent chunk fetch) for on-demand reads... */
  maxSockets: 16,
  /**
   * ...and, apart, for background reads (the rest of a layer): they never take the sockets
   * on-demand reads need, so a container's read does not queue in the HTTP agent behind a
   * background fetch...
   */
  maxBackgroundSockets: 4,
  /**
   * ...and for prefetch reads (a landmark region, a learned record's ranges), as urgent but
   * apart too: a record of files scattered over a layer starts a hundred reads or more at once,
   * which in the on-demand agent held up the reads a pull's next layers open with (their TOC)
   * and the container's first reads.
   */
  maxPrefetchSockets: 8,
  /**
   * Prefetch or background reads of one blob started together go to the daemon as one request
   * of up to this many ranges (the daemon takes 256)...
   */
  maxBatchRanges: 64,
  /** ...and of at most this many bytes together. */
  maxBatchBytes: 16 << 20
} as const

export interface BlobClientOptions {
  retryIntervalMs?: number
  maxWaitMs?: number
}

/** Which of the client's agents a read goes through (each has its own sockets). */
type Priority = 'demand' | 'prefetch' | 'background'

/** Connection errors (Node's, so known by their errno) that mean "no daemon right now": wait for one instead of failing. */
const AWAY = new Set(['ENOENT', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE'])

/**
 * How a blob call fails: an error answer is a BlobReadError with the daemon's message and code;
 * an answer cut short is read again, as from a daemon that went away. Reads have no timeout of
 * their own: the chunk reader's signal bounds them.
 */
const ERRORS: ClientErrors = {
  answered: (_call, answer) => new BlobReadError(`daemon blob API: ${answer.message}${answer.remoteCode != null ? ` (${answer.remoteCode})` : ''}`, answer),
  timeout: (call) => new BlobReadError(`daemon blob API: no answer within ${call.timeoutMs} ms`, { status: 504 }),
  cut: () => new BlobAnswerCutError('the daemon closed the connection mid-answer')
}

/**
 * The FUSE manager's way to the bytes: range requests to the daemon's blob API over its control
 * socket. The socket is set (and may change) when a daemon attaches; while there is none, reads
 * wait for one, so a container reading an uncached chunk during a daemon restart stalls briefly
 * instead of failing.
 */
export class BlobClient {
  private socket?: string
  /** The attached daemon's blob API, one client (and so one agent) per priority. */
  private http?: UnixHttpClient
  private backgroundHttp?: UnixHttpClient
  private prefetchHttp?: UnixHttpClient
  private readonly waiters = new Set<() => void>()
  /** Closed for good (the manager stops): reads fail at once instead of waiting for a daemon. */
  private closed = false

  constructor (private readonly options: BlobClientOptions = {}) {}

  get attached (): string | undefined {
    return this.socket
  }

  /** Points the client at a daemon's control socket (a new daemon after a restart). */
  attach (socket: string): void {
    if (this.closed) return
    if (socket !== this.socket) {
      this.closeClients()
      const client = (maxSockets: number): UnixHttpClient => new UnixHttpClient(socket, { agent: { keepAlive: true, maxSockets }, callTimeoutMs: 0, errors: ERRORS })
      this.http = client(DEFAULTS.maxSockets)
      this.prefetchHttp = client(DEFAULTS.maxPrefetchSockets)
      this.backgroundHttp = client(DEFAULTS.maxBackgroundSockets)
      this.socket = socket
    }
    for (const wake of this.waiters) wake()
  }

  /** Does the attached daemon answer (its control API's health route)? */
  async alive (): Promise<boolean> {
    return await (this.http?.answers('/v1/health') ?? false)
  }

  /**
   * Closes the connections for good. Reads waiting for a daemon, and any read after, fail at once:
   * a stopping manager must not wait for a daemon that may never come back (its layers' stop
   * waits for their reads).
   */
  close (): void {
    this.closed = true
    this.closeClients()
    for (const wake of this.waiters) wake()
  }

  private closeClients (): void {
    for (const c of [this.http, this.prefetchHttp, this.backgroundHttp]) c?.close()
    this.http = this.prefetchHttp = this.backgroundHttp = undefined
  }

  /**
   * A RangeSource for one blob. A background read (`hint.background`) is marked as such
   * (`priority=background`): the daemon lets on-demand reads go ahead of it. A prefetch read
   * (`priority=prefetch`) is fetched right behind on-demand reads, and the daemon does not take it
   * for the workload's.
   * Each kind has its own connections (`DEFAULTS`). `knownSize` (a descriptor's) spares the size
   * request.
   */
  source (cid: string, knownSize?: number): RangeSource {
    let size: Promise<number> | undefined = knownSize != null ? Promise.resolve(knownSize) : undefined
    const sizeOf = async (): Promise<number> => {
      size ??= this.get(`/v1/blobs/${cid}/size`).then(b => (JSON.parse(b.toString('utf8')) as { size: number }).size)
      size.catch(() => { size = undefined })
      return await size
    }
    const readOne = (priority: Priority) => async (offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> =>
      await this.get(`/v1/blobs/${cid}?offset=${offset}&length=${length}${priority === 'demand' ? '' : `&priority=${priority}`}`, signal, priority)
    // Prefetch and background reads started together go as one request (on-demand reads come
    // one at a time, each waited for: nothing to batch).
    const batched = (priority: 'prefetch' | 'background'): ReadBatch => new ReadBatch({
      readOne: readOne(priority),
      readMany: async (ranges, signal) => await this.get(`/v1/blobs/${cid}?ranges=${ranges.map(([o, l]) => `${o}:${l}`).join(',')}&priority=${priority}`, signal, priority),
      size: sizeOf
    }, { maxRanges: DEFAULTS.maxBatchRanges, maxBytes: DEFAULTS.maxBatchBytes })
    const batches = { prefetch: batched('prefetch'), background: batched('background') }
    const demand = readOne('demand')
    return {
      size: sizeOf,
      read: async (offset: number, length: number, signal?: AbortSignal, hint?: ReadHint) => {
        if (length === 0) return new Uint8Array(0)
        const priority: Priority = hint?.background === true ? 'background' : hint?.prefetch === true ? 'prefetch' : 'demand'
        return priority === 'demand' ? await demand(offset, length, signal) : await batches[priority].read(offset, length, signal)
      }
    }
  }

  private async get (path: string, signal?: AbortSignal, priority: Priority = 'demand'): Promise<Buffer> {
    const deadline = Date.now() + (this.options.maxWaitMs ?? DEFAULTS.maxWaitMs)
    for (;;) {
      signal?.throwIfAborted()
      if (this.closed) throw new BlobSourceUnavailableError('the FUSE manager is stopping')
      const socket = this.socket
      const http = priority === 'background' ? this.backgroundHttp : priority === 'prefetch' ? this.prefetchHttp : this.http
      if (http != null) {
        try {
          return await http.bytes('GET', path, { signal })
        } catch (err) {
          if (!(err instanceof BlobAnswerCutError) && !AWAY.has((err as NodeJS.ErrnoException).code ?? '')) throw err
        }
      }
      if (Date.now() >= deadline) {
        throw new BlobSourceUnavailableError(socket == null ? 'no daemon has attached to the FUSE manager yet' : `the daemon on ${socket} has not answered for ${this.options.maxWaitMs ?? DEFAULTS.maxWaitMs} ms`)
      }
      await this.wait(signal)
    }
  }

  /** Sleeps one retry interval, or less when a daemon attaches. */
  private async wait (signal?: AbortSignal): Promise<void> {
    const ac = new AbortController()
    const wake = (): void => ac.abort()
    this.waiters.add(wake)
    const onAbort = (): void => ac.abort()
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      await sleep(this.options.retryIntervalMs ?? DEFAULTS.retryIntervalMs, undefined, { signal: ac.signal })
    } catch {
      // woken up early
    } finally {
      this.waiters.delete(wake)
      signal?.removeEventListener('abort', onAbort)
    }
  }
}
