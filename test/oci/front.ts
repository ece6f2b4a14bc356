/**
 * A test-only HTTP front for the real registry: demands Basic or Bearer auth (running its own
 * token endpoint), or injects failures (500s, dropped connections), or redirects blob GETs to
 * the registry directly. Everything else is proxied to the registry unchanged.
 */
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http'

export interface FrontOptions {
  /** Registry to proxy to, `127.0.0.1:PORT`. */
  upstream: string
  auth?: 'basic' | 'bearer'
  username?: string
  password?: string
  /** Bearer only: allow anonymous tokens for pull scopes. */
  anonymousPull?: boolean
  /** Decides per request whether to fail it: a status to answer, or 'drop' to destroy the socket. */
  fail?: (req: IncomingMessage, n: number) => number | 'drop' | 'drop-mid-body' | 'hang' | undefined
  /** Answer blob GETs with a 307 to this base URL (default: the upstream registry). */
  redirectBlobs?: boolean
  redirectTo?: string
  /** Flip one byte in the body of matching proxied responses (a registry serving corrupt data). */
  tamper?: (req: IncomingMessage) => boolean
}

export interface Front {
  url: string
  host: string
  /** Requests seen, in order (`METHOD path`, plus ` [auth]` when an Authorization header came). */
  log: string[]
  /** Tokens issued so far. */
  tokensIssued: number
  /** Invalidates all issued tokens (next request gets a 401, as when a token expires). */
  expireTokens: () => void
  stop: () => Promise<void>
}

export async function startFront (opts: FrontOptions): Promise<Front> {
  let tokens = new Map<string, string>() // token → scope
  let counter = 0
  let server: Server
  const front: Front = {
    url: '', host: '', log: [], tokensIssued: 0,
    expireTokens: () => { tokens = new Map() },
    stop: async () => {
      server.closeAllConnections()
      await new Promise(resolve => server.close(resolve))
    }
  }
  const user = opts.username ?? 'alice'
  const pass = opts.password ?? 's3cret'
  const basicOk = (h: string | undefined): boolean => h === 'Basic ' + Buffer.from(`${user}:${pass}`).toString('base64')

  const proxy = (req: IncomingMessage, res: ServerResponse, dropMidBody: boolean): void => {
    const [host, port] = opts.upstream.split(':')
    const headers = { ...req.headers, host: opts.upstream }
    delete headers.authorization
    const up = request({ host, port: Number(port), method: req.method, path: req.url, headers }, ur => {
      const h = { ...ur.headers }
      // Upload Locations point at the upstream: rewrite so uploads come through the front.
      if (typeof h.location === 'string') h.location = h.location.replace(`http://${opts.upstream}`, front.url)
      if (opts.tamper?.(req) === true) {
        const parts: Buffer[] = []
        ur.on('data', (d: Buffer) => parts.push(d))
        ur.on('end', () => {
          const body = Buffer.concat(parts)
          if (body.length > 0) body[body.length >> 1] ^= 0xff
          res.writeHead(ur.statusCode ?? 502, h).end(body)
        })
        return
      }
      if (dropMidBody) {
        res.writeHead(ur.statusCode ?? 502, h)
        let sent = 0
        ur.on('data', (d: Buffer) => {
          if (sent === 0) { res.write(d.subarray(0, Math.max(1, Math.floor(d.length / 2)))); sent = 1; res.socket?.destroy() }
        })
        return
      }
      res.writeHead(ur.statusCode ?? 502, h)
      ur.pipe(res)
    })
    up.on('error', () => { res.socket?.destroy() })
    req.pipe(up)
  }

  server = createServer((req, res) => {
    const n = counter++
    front.log.push(`${req.method ?? ''} ${req.url ?? ''}${req.headers.authorization != null ? ' [auth]' : ''}`)
    const url = new URL(req.url ?? '/', 'http://x')
    if (url.pathname === '/token') {
      const scope = url.searchParams.get('scope') ?? ''
      const authed = basicOk(req.headers.authorization)
      if (!authed && !(opts.anonymousPull === true && /:pull$/.test(scope))) {
        res.writeHead(401, { 'content-type': 'application/json' }).end('{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}')
        return
      }
      const token = `tok-${front.tokensIssued++}-${Math.random().toString(36).slice(2)}`
      tokens.set(token, scope)
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, expires_in: 300 }))
      return
    }
    const f = opts.fail?.(req, n)
    if (f === 'drop') { req.socket.destroy(); return }
    if (f === 'hang') return
    if (typeof f === 'number') { res.writeHead(f, { 'content-type': 'application/json' }).end(`{"errors":[{"code":"UNKNOWN","message":"injected ${f}"}]}`); return }

    if (opts.auth === 'basic' && !basicOk(req.headers.authorization)) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="test"', 'content-type': 'application/json' }).end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}')
      return
    }
    if (opts.auth === 'bearer') {
      const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')
      const repo = /^\/v2\/(.+?)\/(?:manifests|blobs|tags)\//.exec(url.pathname)?.[1]
      const need = req.method === 'GET' || req.method === 'HEAD' ? 'pull' : 'push'
      const scope = m != null ? tokens.get(m[1]) : undefined
      const granted = scope != null && (repo == null || (scope.startsWith(`repository:${repo}:`) && scope.split(':')[2].split(',').includes(need)))
      if (!granted) {
        const wanted = repo != null ? `repository:${repo}:${need === 'push' ? 'pull,push' : 'pull'}` : ''
        res.writeHead(401, {
          'www-authenticate': `Bearer realm="${front.url}/token",service="test-registry"${wanted !== '' ? `,scope="${wanted}"` : ''}`,
          'content-type': 'application/json'
        }).end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}')
        return
      }
    }
    if (opts.redirectBlobs === true && req.method === 'GET' && /\/blobs\/sha256:/.test(url.pathname)) {
      res.writeHead(307, { location: `${opts.redirectTo ?? `http://${opts.upstream}`}${req.url ?? ''}` }).end()
      return
    }
    proxy(req, res, f === 'drop-mid-body')
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  front.host = `127.0.0.1:${port}`
  front.url = `http://${front.host}`
  return front
}
