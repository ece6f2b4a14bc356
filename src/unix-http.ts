import { chmod, rm } from 'node:fs/promises'
import { Agent, createServer, request, type AgentOptions, type IncomingMessage, type RequestOptions, type Server, type ServerResponse } from 'node:http'
import { AbortError, BadRequestError, BodyTooLargeError } from './errors.js'

/**
 * Our HTTP APIs on unix sockets (the daemon's control API with its blob routes, the FUSE
 * manager's API): HTTP/1.1, JSON bodies, root-only sockets (0600), so `curl --unix-socket` can
 * inspect them. Both ends are ours; this module is the one definition of the plumbing of both.
 *
 * Every error answer has one body, `{ "error": message, "code": code }`: the code is the error's
 * own (ours, or Node's errno), else the server's code for what has none of its own. The client
 * turns such an answer into its protocol's error class, with the remote code and the status.
 */

/** Every limit and timeout of the unix-socket APIs, in one place. */
export const DEFAULTS = {
  /** A request body (a JSON call) larger than this is refused with 413: calls are small. */
  maxBodyBytes: 1 << 20,
  /**
   * Receiving a request's headers and body may take this long. Answers take as long as their
   * work (a mount, a command): the caller bounds them and hangs up, which cancels the call.
   */
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 10_000,
  /** An idle keep-alive connection is closed by the server after this long. */
  keepAliveTimeoutMs: 5_000,
  /** A call gets this long for its whole answer unless its client says otherwise (0: only the caller's signal bounds it). */
  callTimeoutMs: 30_000,
  /** The most of one answer a client takes: a JSON answer, or a byte range of the blob API (it serves at most 64 MiB). */
  maxAnswerBytes: 64 << 20,
  /** A health probe ("does anything answer on this socket?") gives up after this long. */
  probeTimeoutMs: 2_000
} as const

/** The body of every error answer. */
export interface ErrorBody {
  error: string
  code: string
}

// ---- server ----

/** One call to a route. */
export interface Call {
  req: IncomingMessage
  url: URL
  /** The request's JSON body; undefined when it is empty. */
  body: unknown
  /** Fires when the client hangs up before the answer is complete: the call should stop. */
  signal: AbortSignal
  /** For a `stream` route, which writes its answer itself. */
  res: ServerResponse
}

export interface Route {
  method: 'GET' | 'POST'
  /** The path; with `prefix`, every path under it (the handler reads the rest from `call.url`). */
  path: string
  prefix?: boolean
  /**
   * Answers the call: what it returns is answered 200, a Uint8Array as bytes
   * (application/octet-stream), anything else as JSON. A `stream` route writes the answer itself
   * through `call.res`; what it returns is ignored. A throw before anything was written is
   * answered with the error body; after, the connection is closed (the client sees a cut answer).
   */
  handle: (call: Call) => unknown
  stream?: boolean
  /** The status of an error this route throws; undefined: the server's `statusOf`. */
  statusOf?: (err: Error) => number | undefined
}

export interface UnixHttpServerOptions {
  /** The socket path: a stale socket there is replaced; the new one is made 0600. */
  socket: string
  /** Answered as the code of what has no error of its own: no route (404), another method (405), an error without a code. */
  code: string
  /** The status of an error a route throws (after the route's own); undefined: 400/413 for malformed calls, else 500. */
  statusOf?: (err: Error) => number | undefined
  /** Told of every error answered (the server logs what it must). */
  onError?: (err: Error, status: number, req: IncomingMessage) => void
  maxBodyBytes?: number
  headersTimeoutMs?: number
  requestTimeoutMs?: number
  keepAliveTimeoutMs?: number
}

/** A listening server; `close()` drops its connections (cancelling the calls in flight) and removes the socket. */
export interface UnixHttpServer {
  readonly server: Server
  close: () => Promise<void>
}

/** Serves `routes` on a unix socket. */
export async function serveUnixHttp (routes: Route[], options: UnixHttpServerOptions): Promise<UnixHttpServer> {
  const server = createServer({
    headersTimeout: options.headersTimeoutMs ?? DEFAULTS.headersTimeoutMs,
    requestTimeout: options.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs,
    keepAliveTimeout: options.keepAliveTimeoutMs ?? DEFAULTS.keepAliveTimeoutMs
  }, (req, res) => { dispatch(routes, options, req, res) })
  server.setTimeout(0) // no socket inactivity timeout: an answer may take long (see headersTimeoutMs)
  await rm(options.socket, { force: true })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.socket, () => { server.off('error', reject); resolve() })
  })
  await chmod(options.socket, 0o600)
  return {
    server,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>(resolve => server.close(() => resolve()))
      await rm(options.socket, { force: true })
    }
  }
}

function dispatch (routes: Route[], options: UnixHttpServerOptions, req: IncomingMessage, res: ServerResponse): void {
  let url: URL
  try {
    url = new URL(req.url ?? '/', 'http://unix')
  } catch {
    // A target that is no URL path ("//", "///:"): thrown here, it would be an uncaught exception.
    req.resume()
    refuse(res, 400, 'malformed request target', options.code)
    return
  }
  const matches = routes.filter(r => r.prefix === true ? url.pathname.startsWith(r.path) : url.pathname === r.path)
  const route = matches.find(r => r.method === req.method)
  const ac = new AbortController()
  // The client hung up (Ctrl-C, kill -9, a timeout of its own) or the server closes: the call stops.
  // The socket's close is seen whether or not anything was written yet (a command may write nothing for minutes).
  const gone = (): void => { if (!res.writableFinished) ac.abort() }
  res.once('close', gone)
  req.socket.once('close', gone)
  res.once('close', () => req.socket.off('close', gone))
  const fail = (err: Error, status: number): void => {
    options.onError?.(err, status, req)
    answerError(res, err, status, options.code)
  }
  if (route == null) {
    req.resume()
    if (matches.length === 0) refuse(res, 404, `no route ${req.method ?? ''} ${url.pathname}`, options.code)
    else refuse(res, 405, `only ${[...new Set(matches.map(r => r.method))].join(', ')} on ${url.pathname}`, options.code, { allow: matches.map(r => r.method).join(', ') })
    return
  }
  readJson(req, options.maxBodyBytes ?? DEFAULTS.maxBodyBytes)
    .then(async (body) => await route.handle({ req, url, body, signal: ac.signal, res }))
    .then((out) => {
      if (route.stream === true || res.headersSent || res.destroyed) return
      if (out instanceof Uint8Array) res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': out.length }).end(out)
      else res.writeHead(200, { 'content-type': 'application/json' }).end(out === undefined ? '' : JSON.stringify(out))
    })
    .catch((err: Error) => {
      if (ac.signal.aborted && res.destroyed) return // nobody to tell
      fail(err, route.statusOf?.(err) ?? options.statusOf?.(err) ?? statusOfRequestError(err))
    })
}

function statusOfRequestError (err: Error): number {
  return err instanceof BadRequestError || err instanceof BodyTooLargeError ? err.status : 500
}

/** Answers an error with the one error body; once the answer has begun, only closing the connection can say it failed. */
function answerError (res: ServerResponse, err: Error, status: number, fallbackCode: string): void {
  const code = (err as { code?: unknown }).code
  if (res.headersSent) { res.destroy(); return }
  const body: ErrorBody = { error: err.message, code: typeof code === 'string' ? code : fallbackCode }
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body))
}

function refuse (res: ServerResponse, status: number, message: string, code: string, headers: Record<string, string> = {}): void {
  const body: ErrorBody = { error: message, code }
  res.writeHead(status, { ...headers, 'content-type': 'application/json' }).end(JSON.stringify(body))
}

/**
 * The request's body as JSON (undefined when empty), at most `max` bytes. A bigger one is refused
 * at once when its length is declared, else once it has been drained (bounded by requestTimeoutMs):
 * the connection stays usable for the answer.
 */
async function readJson (req: IncomingMessage, max: number): Promise<unknown> {
  const tooLarge = (): BodyTooLargeError => new BodyTooLargeError(`the request body exceeds the limit of ${max} bytes`)
  if (Number(req.headers['content-length'] ?? 0) > max) {
    req.resume()
    throw tooLarge()
  }
  const text = await new Promise<string | undefined>((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (c: Buffer) => {
      size += c.length
      if (size <= max) chunks.push(c)
    })
    req.on('error', reject)
    req.on('end', () => {
      if (size > max) reject(tooLarge())
      else resolve(size === 0 ? undefined : Buffer.concat(chunks).toString('utf8'))
    })
  })
  if (text === undefined) return undefined
  try {
    return JSON.parse(text)
  } catch {
    throw new BadRequestError('body is not JSON')
  }
}

// ---- client ----

/** One call, as its errors describe it. */
export interface CallInfo {
  method: string
  path: string
  /** 0: only the caller's signal bounded it. */
  timeoutMs: number
}

/** How a client's calls fail: each protocol's client throws its own classes. */
export interface ClientErrors {
  /** The server answered an error (or an answer that is not what was asked: not JSON, too large): `message` and `remoteCode` from its error body. */
  answered: (call: CallInfo, answer: { message: string, remoteCode?: string, status: number }) => Error
  /** No whole answer within the call's timeout; the connection is closed, so the server cancels the call. */
  timeout: (call: CallInfo) => Error
  /** The caller's signal fired; the connection is closed, so the server cancels the call. Default: our AbortError. */
  cancelled?: (call: CallInfo, reason: unknown) => Error
  /** Connecting failed, or the connection broke before an answer (Node's errno error). Default: that error as it is. */
  connection?: (call: CallInfo, err: NodeJS.ErrnoException) => Error
  /** The answer ended before its content-length (the server went away mid-answer). Default: `answered`. */
  cut?: (call: CallInfo) => Error
}

export interface UnixHttpClientOptions {
  errors: ClientErrors
  /**
   * The options of this client's own agent; false: a connection per call (a one-off probe).
   * Never Node's global agent, which cuts a socket after 5 s idle: every call is bounded by its
   * own timeout or its caller's signal.
   */
  agent?: AgentOptions | false
  /** Default timeout of a call (0: only the caller's signal bounds it). */
  callTimeoutMs?: number
  maxAnswerBytes?: number
}

export interface CallOptions {
  /** Sent as JSON. */
  body?: unknown
  signal?: AbortSignal
  /** This call's timeout (0: only `signal` bounds it); default: the client's. */
  timeoutMs?: number
}

/** A client of one API on one socket. */
export class UnixHttpClient {
  private readonly agent: Agent | false

  constructor (readonly socket: string, private readonly options: UnixHttpClientOptions) {
    this.agent = options.agent === false ? false : new Agent({ keepAlive: false, ...options.agent })
  }

  /** A JSON call: the parsed answer (undefined for an empty one). */
  async json<T = unknown> (method: string, path: string, options: CallOptions = {}): Promise<T> {
    const { call, status, body } = await this.send(method, path, options)
    if (body.length === 0) return undefined as T
    try {
      return JSON.parse(body.toString('utf8')) as T
    } catch {
      throw this.options.errors.answered(call, { message: `${method} ${path}: answered HTTP ${status} with a body that is not JSON`, status })
    }
  }

  /** A call answered with bytes. */
  async bytes (method: string, path: string, options: CallOptions = {}): Promise<Buffer> {
    return (await this.send(method, path, options)).body
  }

  /**
   * A call whose answer is read as it comes (a stream of lines): resolves with the answer once a
   * 2xx head arrived. From then on the caller owns it (the timeout and `signal` no longer apply:
   * destroying the answer hangs up).
   */
  async open (method: string, path: string, options: CallOptions = {}): Promise<IncomingMessage> {
    return await this.start(method, path, options, true) as IncomingMessage
  }

  /** Does the server answer `GET path` with 200 within `timeoutMs`? Any failure is "no". */
  async answers (path: string, timeoutMs: number = DEFAULTS.probeTimeoutMs): Promise<boolean> {
    try {
      await this.bytes('GET', path, { timeoutMs })
      return true
    } catch {
      return false
    }
  }

  /** Closes the agent's connections. */
  close (): void {
    if (this.agent !== false) this.agent.destroy()
  }

  private async send (method: string, path: string, options: CallOptions): Promise<{ call: CallInfo, status: number, body: Buffer }> {
    return await this.start(method, path, options, false) as { call: CallInfo, status: number, body: Buffer }
  }

  private async start (method: string, path: string, options: CallOptions, streamed: boolean): Promise<unknown> {
    const errors = this.options.errors
    const timeoutMs = options.timeoutMs ?? this.options.callTimeoutMs ?? DEFAULTS.callTimeoutMs
    const call: CallInfo = { method, path, timeoutMs }
    const { signal } = options
    const cancelled = (): Error => errors.cancelled?.(call, signal?.reason) ?? new AbortError(`${method} ${path}: cancelled`, { cause: signal?.reason })
    if (signal?.aborted === true) throw cancelled()
    const payload = options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body))
    const max = this.options.maxAnswerBytes ?? DEFAULTS.maxAnswerBytes
    return await new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined
      let settled = false
      /** The error we closed the connection with (timeout, cancel, too large): the one the call fails with. */
      let failure: Error | undefined
      const settle = (err: Error | undefined, value?: unknown): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        if (err != null) reject(err)
        else resolve(value)
      }
      const hangUp = (err: Error): void => {
        failure ??= err
        req.destroy(failure)
        settle(failure)
      }
      const onAbort = (): void => { hangUp(cancelled()) }
      const options: RequestOptions & { servername: string } = {
        socketPath: this.socket,
        agent: this.agent,
        // TLS's server name (the agent reads it), moot on a unix socket: left unset, Node derives
        // it from the host header through its IPv6 pattern, whose first use costs a process
        // ~10 ms (a CLI command, the FUSE manager's first read of a pull)
        servername: '',
        path,
        method,
        headers: payload != null ? { 'content-type': 'application/json', 'content-length': payload.length } : {}
      }
      const req = request(options, (res) => {
        const status = res.statusCode ?? 0
        const ok = status >= 200 && status < 300
        if (ok && streamed) {
          settle(undefined, res)
          return
        }
        const chunks: Buffer[] = []
        let size = 0
        res.on('data', (c: Buffer) => {
          size += c.length
          if (size > max) hangUp(errors.answered(call, { message: `${method} ${path}: the answer exceeds the limit of ${max} bytes`, status }))
          else chunks.push(c)
        })
        const cut = (): Error => errors.cut?.(call) ?? errors.answered(call, { message: `${method} ${path}: the answer ended early`, status })
        // The connection broke mid-answer (Node's 'aborted' ECONNRESET): a cut answer.
        res.on('error', () => settle(failure ?? cut()))
        res.on('end', () => {
          const body = Buffer.concat(chunks)
          const declared = res.headers['content-length']
          if (declared != null && Number(declared) !== body.length) settle(cut())
          else if (ok) settle(undefined, { call, status, body })
          else settle(errors.answered(call, { ...errorAnswer(body, status, call), status }))
        })
      })
      req.on('error', (err: NodeJS.ErrnoException) => settle(failure ?? errors.connection?.(call, err) ?? err))
      if (timeoutMs > 0) timer = setTimeout(() => hangUp(errors.timeout(call)), timeoutMs)
      signal?.addEventListener('abort', onAbort, { once: true })
      req.end(payload)
    })
  }
}

/**
 * The message and code of an error answer. The body is `{ error, code }`; answers of the version
 * before (the blob API's `{ error }` with the code in the message, the control API's empty 404)
 * still parse, because a running FUSE manager outlives the daemon that started it and so talks
 * to a daemon one version apart: keep this for one version.
 */
function errorAnswer (body: Buffer, status: number, call: CallInfo): { message: string, remoteCode?: string } {
  let parsed: Partial<Record<keyof ErrorBody, unknown>> | undefined
  try { parsed = JSON.parse(body.toString('utf8')) as typeof parsed } catch {}
  return {
    message: typeof parsed?.error === 'string' ? parsed.error : `${call.method} ${call.path}: HTTP ${status}`,
    ...(typeof parsed?.code === 'string' ? { remoteCode: parsed.code } : {})
  }
}
