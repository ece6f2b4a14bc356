/**
 * Distribution API v2 client: manifests, blobs, uploads; Bearer and Basic auth; bounded retries
 * with backoff on 5xx and dropped connections; redirects followed by hand so credentials never
 * leak to another origin; typed errors naming the repository and digest.
 */
import type { Logger } from 'pino'
import { isAbortError } from '../../errors.js'
import { silentLogger } from '../../logging.js'
import {
  RegistryConnectionError, RegistryDeniedError, RegistryError, RegistryNotFoundError, RegistryProtocolError,
  RegistryServerError, RegistryUnauthorizedError
} from '../errors.js'
import { basicAuthorization, loadDockerCredentials, parseChallenge, type Challenge, type Credentials, type Token } from './auth.js'

export const DEFAULTS = {
  /** Retries after the first attempt for 5xx, 429 and connection failures. */
  retries: 3,
  /** First backoff delay; doubles each retry up to `maxRetryDelayMs`. */
  retryDelayMs: 200,
  maxRetryDelayMs: 3000,
  /** Redirect hops followed (blob downloads often redirect to storage). */
  maxRedirects: 5,
  /** Token lifetime when the token endpoint does not say (the spec's default). */
  tokenLifetimeSeconds: 60,
  userAgent: 'ipfs-estargz/0.1'
} as const

export interface RegistryClientOptions {
  /** Use http:// instead of https:// (`--plain-http`, for loopback registries). */
  plainHttp?: boolean
  /** Explicit credentials; otherwise looked up in the Docker config file. */
  credentials?: Credentials
  /** Docker config file to read `auths` from (default `$DOCKER_CONFIG/config.json` or ~/.docker/config.json); `false` disables. */
  dockerConfig?: string | false
  retries?: number
  retryDelayMs?: number
  maxRetryDelayMs?: number
  maxRedirects?: number
  userAgent?: string
  logger?: Logger
}

/** What an operation needs: pull for reads, push for writes (the token scope). */
export type Access = 'pull' | 'push'

export interface RequestOptions {
  method?: 'GET' | 'HEAD' | 'PUT' | 'POST' | 'PATCH' | 'DELETE'
  headers?: Record<string, string>
  /** Request body; buffered so a retry can resend it. */
  body?: Uint8Array
  access?: Access
  signal?: AbortSignal
  /** Describes the target for error messages, e.g. `blob sha256:… in host/repo`. */
  what: string
  /** Statuses that are a normal answer (default: 2xx). Anything else throws a typed error. */
  ok?: (status: number) => boolean
}

const RETRY_STATUSES = new Set([429, 500, 502, 503, 504])

function describeNetworkError (err: unknown): string {
  const cause = (err as { cause?: { code?: string, message?: string } }).cause
  return cause?.code ?? cause?.message ?? (err as Error).message
}

async function sleep (ms: number, signal?: AbortSignal): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve() }, ms)
    const onAbort = (): void => { clearTimeout(t); reject(signal?.reason) }
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/** The registry's error body (`{"errors":[{"code","message"}]}`) as a short string. */
async function errorDetail (res: Response): Promise<string> {
  try {
    const text = await res.text()
    const body = JSON.parse(text) as { errors?: Array<{ code?: string, message?: string }> }
    const parts = (body.errors ?? []).map(e => [e.code, e.message].filter(Boolean).join(': '))
    if (parts.length > 0) return ` (${parts.join('; ')})`
    return text.length > 0 && text.length < 200 ? ` (${text.trim()})` : ''
  } catch {
    return ''
  }
}

export class RegistryClient {
  readonly baseUrl: string
  private readonly opts: Required<Omit<RegistryClientOptions, 'credentials' | 'dockerConfig' | 'logger' | 'plainHttp'>>
  private readonly log: Logger
  private credentials?: Credentials
  private credentialsLoaded = false
  private challenge?: Challenge
  private readonly tokens = new Map<string, Token>()
  private readonly pendingTokens = new Map<string, Promise<Token>>()

  /** `registry` is `host[:port]`. */
  constructor (readonly registry: string, private readonly options: RegistryClientOptions = {}) {
    this.baseUrl = `${options.plainHttp === true ? 'http' : 'https'}://${registry}`
    this.opts = {
      retries: options.retries ?? DEFAULTS.retries,
      retryDelayMs: options.retryDelayMs ?? DEFAULTS.retryDelayMs,
      maxRetryDelayMs: options.maxRetryDelayMs ?? DEFAULTS.maxRetryDelayMs,
      maxRedirects: options.maxRedirects ?? DEFAULTS.maxRedirects,
      userAgent: options.userAgent ?? DEFAULTS.userAgent
    }
    this.credentials = options.credentials
    this.log = (options.logger ?? silentLogger()).child({ component: 'registry', registry })
  }

  private async getCredentials (): Promise<Credentials | undefined> {
    if (!this.credentialsLoaded) {
      this.credentialsLoaded = true
      if (this.credentials == null && this.options.dockerConfig !== false) {
        this.credentials = await loadDockerCredentials(this.registry, this.options.dockerConfig)
      }
    }
    return this.credentials
  }

  /** `repository:<repo>:pull[,push]`. */
  static scope (repository: string, access: Access): string {
    return `repository:${repository}:${access === 'push' ? 'pull,push' : 'pull'}`
  }

  private async fetchToken (scope: string, signal?: AbortSignal): Promise<Token> {
    const ch = this.challenge as Challenge
    const realm = ch.params.realm
    if (realm == null) throw new RegistryProtocolError(`registry ${this.registry}: Bearer challenge without realm`, 401)
    const url = new URL(realm)
    if (ch.params.service != null) url.searchParams.set('service', ch.params.service)
    url.searchParams.set('scope', scope)
    const headers: Record<string, string> = { 'user-agent': this.opts.userAgent }
    const creds = await this.getCredentials()
    if (creds != null) headers.authorization = basicAuthorization(creds)
    let res: Response
    try {
      res = await fetch(url, { headers, signal })
    } catch (err) {
      if (isAbortError(err, signal)) throw err
      throw new RegistryConnectionError(`registry ${this.registry}: token endpoint ${url.origin}${url.pathname} unreachable: ${describeNetworkError(err)}`, 0)
    }
    if (res.status === 401 || res.status === 403) {
      throw new RegistryUnauthorizedError(`registry ${this.registry}: token endpoint refused ${creds != null ? `credentials of ${JSON.stringify(creds.username)}` : 'anonymous access'} for ${scope}: ${res.status}${await errorDetail(res)}`, 401)
    }
    if (!res.ok) throw new RegistryProtocolError(`registry ${this.registry}: token endpoint answered ${res.status} for ${scope}${await errorDetail(res)}`, res.status)
    let body: { token?: unknown, access_token?: unknown, expires_in?: unknown }
    try { body = await res.json() as typeof body } catch { body = {} }
    const token = typeof body.token === 'string' ? body.token : typeof body.access_token === 'string' ? body.access_token : undefined
    if (token == null || token === '') throw new RegistryProtocolError(`registry ${this.registry}: token endpoint returned no token for ${scope}`, res.status)
    const lifetime = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : DEFAULTS.tokenLifetimeSeconds
    // Refresh a little early so a token does not expire in flight.
    return { token, expiresAt: Date.now() + lifetime * 1000 * 0.9 }
  }

  /** The Authorization header for a request, once the registry's challenge is known. */
  private async authorization (scope: string, signal?: AbortSignal): Promise<string | undefined> {
    const ch = this.challenge
    if (ch == null) return undefined
    if (ch.scheme === 'basic') {
      const creds = await this.getCredentials()
      return creds != null ? basicAuthorization(creds) : undefined
    }
    const cached = this.tokens.get(scope)
    if (cached != null && cached.expiresAt > Date.now()) return `Bearer ${cached.token}`
    // Concurrent requests share one token request.
    let p = this.pendingTokens.get(scope)
    if (p == null) {
      p = this.fetchToken(scope, signal).finally(() => this.pendingTokens.delete(scope))
      this.pendingTokens.set(scope, p)
    }
    const t = await p
    this.tokens.set(scope, t)
    return `Bearer ${t.token}`
  }

  /** Maps a final non-OK status to its typed error. */
  private async statusError (res: Response, method: string, what: string): Promise<RegistryError> {
    const detail = await errorDetail(res)
    const msg = `registry ${this.registry}: ${method} ${what}: ${res.status} ${res.statusText}${detail}`
    if (res.status === 401) return new RegistryUnauthorizedError(msg, 401)
    if (res.status === 403) return new RegistryDeniedError(msg, 403)
    if (res.status === 404) return new RegistryNotFoundError(msg, 404)
    if (res.status >= 500) return new RegistryServerError(msg, res.status)
    return new RegistryProtocolError(msg, res.status)
  }

  /**
   * One request against `/v2/<path>` (or an absolute URL such as an upload Location), with auth,
   * redirects and retries. Returns the response for OK statuses; the caller reads/cancels the body.
   */
  async request (repository: string, path: string, o: RequestOptions): Promise<Response> {
    const method = o.method ?? 'GET'
    const scope = RegistryClient.scope(repository, o.access ?? 'pull')
    const ok = o.ok ?? ((s: number) => s >= 200 && s < 300)
    const start = /^https?:\/\//.test(path) ? new URL(path) : new URL(`/v2/${path}`, this.baseUrl)
    let retried401 = false
    let lastError: RegistryError | undefined
    for (let attempt = 0; ; attempt++) {
      o.signal?.throwIfAborted()
      if (attempt > this.opts.retries) throw lastError as RegistryError
      if (attempt > 0) {
        const delay = Math.min(this.opts.maxRetryDelayMs, this.opts.retryDelayMs * 2 ** (attempt - 1))
        this.log.debug({ attempt, delay, what: o.what, err: lastError?.message }, 'retrying registry request')
        await sleep(delay, o.signal)
      }
      let res: Response
      try {
        res = await this.send(start, method, scope, o)
      } catch (err) {
        if (isAbortError(err, o.signal)) throw err
        if (err instanceof RegistryError) throw err
        lastError = new RegistryConnectionError(`registry ${this.registry}: ${method} ${o.what}: connection failed: ${describeNetworkError(err)}`, 0)
        continue
      }
      if (res.status === 401) {
        const ch = parseChallenge(res.headers.get('www-authenticate'))
        if (ch != null && !retried401) {
          await res.body?.cancel()
          // First challenge, a changed one, or an expired token: authenticate and try once more.
          this.challenge = ch
          this.tokens.delete(scope)
          if (ch.scheme === 'basic' && (await this.getCredentials()) == null) {
            throw new RegistryUnauthorizedError(`registry ${this.registry}: ${method} ${o.what}: 401 Unauthorized (Basic auth required and no credentials configured)`, 401)
          }
          retried401 = true
          attempt--
          continue
        }
      }
      if (ok(res.status)) return res
      const err = await this.statusError(res, method, o.what)
      if (!RETRY_STATUSES.has(res.status)) throw err
      lastError = err
    }
  }

  /** One attempt: follows redirects by hand, dropping credentials when the origin changes. */
  private async send (url: URL, method: string, scope: string, o: RequestOptions): Promise<Response> {
    let target = url
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { 'user-agent': this.opts.userAgent, ...o.headers }
      if (target.origin === new URL(this.baseUrl).origin) {
        const auth = await this.authorization(scope, o.signal)
        if (auth != null) headers.authorization = auth
      }
      const init: RequestInit = { method, headers, redirect: 'manual', signal: o.signal }
      if (o.body != null) init.body = o.body as Uint8Array<ArrayBuffer>
      const res = await fetch(target, init)
      if (![301, 302, 303, 307, 308].includes(res.status)) return res
      const loc = res.headers.get('location')
      await res.body?.cancel()
      if (loc == null) throw new RegistryProtocolError(`registry ${this.registry}: ${method} ${o.what}: redirect ${res.status} without Location`, res.status)
      if (hop >= this.opts.maxRedirects) throw new RegistryProtocolError(`registry ${this.registry}: ${method} ${o.what}: more than ${this.opts.maxRedirects} redirects`, res.status)
      target = new URL(loc, target)
    }
  }
}
