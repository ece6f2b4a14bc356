import { createHash, randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto'
import { readFile, stat } from 'node:fs/promises'
import { LRUCache } from 'lru-cache'
import type { Logger } from '../logging.js'
import { MirrorCredentialsError } from './errors.js'

/** Basic-auth defaults, in one place. */
export const AUTH_DEFAULTS = {
  /** scrypt cost (N, r, p) and key length: ~50 ms a check on the threadpool, never on the event loop. */
  scrypt: { N: 16384, r: 8, p: 1, keyLength: 32, saltLength: 16 },
  /** Accepted `Authorization` values remembered (by their SHA-256) so a pull pays scrypt once. */
  cacheEntries: 1024,
  cacheTtlMs: 5 * 60_000,
  /** Longest `Authorization` header looked at. */
  maxHeaderBytes: 1024
} as const

const PREFIX = '$scrypt$'

async function scrypt (password: string, salt: Buffer, keyLength: number, options: ScryptOptions): Promise<Buffer> {
  return await new Promise((resolve, reject) => {
    scryptCb(password, salt, keyLength, { ...options, maxmem: 64 << 20 }, (err, key) => { if (err != null) reject(err); else resolve(key) })
  })
}

const params = (): ScryptOptions => ({ N: AUTH_DEFAULTS.scrypt.N, r: AUTH_DEFAULTS.scrypt.r, p: AUTH_DEFAULTS.scrypt.p })

/** One credentials line, `USER:$scrypt$SALT$KEY` (base64), for `password` (`ipfs-estargz mirror passwd`). */
export async function credentialLine (user: string, password: string): Promise<string> {
  if (user === '' || user.includes(':') || /\s/.test(user)) throw new MirrorCredentialsError('a user name must be non-empty, without ":" or spaces')
  const salt = randomBytes(AUTH_DEFAULTS.scrypt.saltLength)
  const key = await scrypt(password, salt, AUTH_DEFAULTS.scrypt.keyLength, params())
  return `${user}:${PREFIX}${salt.toString('base64')}$${key.toString('base64')}`
}

/**
 * HTTP basic auth against a credentials file (one `USER:$scrypt$SALT$KEY` line per user; `#`
 * comments). Passwords are checked with scrypt (no bcrypt dependency) and compared in constant
 * time; an unknown user costs the same scrypt as a known one.
 */
export class BasicAuth {
  private readonly accepted: LRUCache<string, string>
  private readonly dummy = { salt: randomBytes(AUTH_DEFAULTS.scrypt.saltLength), key: randomBytes(AUTH_DEFAULTS.scrypt.keyLength) }

  private constructor (private readonly users: Map<string, { salt: Buffer, key: Buffer }>) {
    this.accepted = new LRUCache({ max: AUTH_DEFAULTS.cacheEntries, ttl: AUTH_DEFAULTS.cacheTtlMs })
  }

  static async load (file: string, logger: Logger): Promise<BasicAuth> {
    let text: string
    try {
      const st = await stat(file)
      if ((st.mode & 0o077) !== 0) logger.warn({ file }, 'the mirror\'s credentials file is readable by others: chmod 600 it')
      text = await readFile(file, 'utf8')
    } catch (err) {
      throw new MirrorCredentialsError(`cannot read the mirror's credentials file ${file}: ${(err as Error).message}`)
    }
    const users = new Map<string, { salt: Buffer, key: Buffer }>()
    for (const [i, raw] of text.split('\n').entries()) {
      const line = raw.trim()
      if (line === '' || line.startsWith('#')) continue
      const colon = line.indexOf(':')
      const hash = colon > 0 ? line.slice(colon + 1) : ''
      const parts = hash.startsWith(PREFIX) ? hash.slice(PREFIX.length).split('$') : []
      if (parts.length !== 2) throw new MirrorCredentialsError(`${file}:${i + 1}: not USER:$scrypt$SALT$KEY (make one with \`ipfs-estargz mirror passwd USER\`)`)
      const salt = Buffer.from(parts[0], 'base64')
      const key = Buffer.from(parts[1], 'base64')
      if (salt.length < 8 || key.length !== AUTH_DEFAULTS.scrypt.keyLength) throw new MirrorCredentialsError(`${file}:${i + 1}: salt or key of the wrong length`)
      users.set(line.slice(0, colon), { salt, key })
    }
    if (users.size === 0) throw new MirrorCredentialsError(`${file} names no user`)
    return new BasicAuth(users)
  }

  /** The user an `Authorization: Basic …` header proves, or undefined. */
  async check (header: string | undefined): Promise<string | undefined> {
    if (header == null || header.length > AUTH_DEFAULTS.maxHeaderBytes) return undefined
    const m = /^Basic ([A-Za-z0-9+/=]+)$/i.exec(header.trim())
    if (m == null) return undefined
    const cacheKey = createHash('sha256').update(header.trim()).digest('hex')
    const known = this.accepted.get(cacheKey)
    if (known != null) return known
    const decoded = Buffer.from(m[1], 'base64').toString('utf8')
    const colon = decoded.indexOf(':')
    if (colon < 0) return undefined
    const user = decoded.slice(0, colon)
    const entry = this.users.get(user)
    const { salt, key } = entry ?? this.dummy
    const got = await scrypt(decoded.slice(colon + 1), salt, key.length, params())
    const ok = timingSafeEqual(got, key) && entry != null
    if (!ok) return undefined
    this.accepted.set(cacheKey, user)
    return user
  }
}
