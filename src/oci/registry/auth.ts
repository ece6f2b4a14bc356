/**
 * Registry authentication: `WWW-Authenticate` challenges, credentials (options or the Docker
 * config file's `auths`), and the Bearer token flow of the Distribution token spec.
 */
import { readFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { join } from 'node:path'

export interface Credentials {
  username: string
  password: string
}

export interface Challenge {
  scheme: 'basic' | 'bearer'
  params: Record<string, string>
}

/** Parses `Bearer realm="...",service="...",scope="..."` / `Basic realm="..."`; the first known scheme wins. */
export function parseChallenge (header: string | null): Challenge | undefined {
  if (header == null) return undefined
  const m = /^\s*(\w+)\s*(.*)$/.exec(header)
  if (m == null) return undefined
  const scheme = m[1].toLowerCase()
  if (scheme !== 'basic' && scheme !== 'bearer') return undefined
  const params: Record<string, string> = {}
  const re = /([A-Za-z_][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))/g
  for (let p = re.exec(m[2]); p != null; p = re.exec(m[2])) {
    params[p[1].toLowerCase()] = p[2] != null ? p[2].replace(/\\(.)/g, '$1') : p[3]
  }
  return { scheme, params }
}

export function basicAuthorization (c: Credentials): string {
  return 'Basic ' + Buffer.from(`${c.username}:${c.password}`).toString('base64')
}

interface DockerConfigFile {
  auths?: Record<string, { auth?: string, username?: string, password?: string }>
}

function hostOfKey (key: string): string {
  // Keys are `host[:port]` or URLs like `https://index.docker.io/v1/`.
  try {
    if (key.includes('://')) return new URL(key).host
  } catch {}
  return key.replace(/\/.*$/, '')
}

/** Default Docker config path: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`. */
export function dockerConfigPath (): string {
  return join(process.env.DOCKER_CONFIG ?? join(homedir(), '.docker'), 'config.json')
}

/**
 * Credentials for `registry` from a Docker config file's `auths` (base64 `user:pass` in `auth`,
 * or `username`/`password`). Credential helpers (`credsStore`, `credHelpers`) are not run.
 * Returns `undefined` when the file or the entry is missing.
 */
export async function loadDockerCredentials (registry: string, path = dockerConfigPath()): Promise<Credentials | undefined> {
  let cfg: DockerConfigFile
  try {
    cfg = JSON.parse(await readFile(path, 'utf8')) as DockerConfigFile
  } catch {
    return undefined
  }
  const hosts = registry === 'registry-1.docker.io' ? [registry, 'index.docker.io', 'docker.io'] : [registry]
  for (const [key, entry] of Object.entries(cfg.auths ?? {})) {
    if (!hosts.includes(hostOfKey(key)) || entry == null) continue
    if (typeof entry.auth === 'string' && entry.auth !== '') {
      const decoded = Buffer.from(entry.auth, 'base64').toString('utf8')
      const i = decoded.indexOf(':')
      if (i > 0) return { username: decoded.slice(0, i), password: decoded.slice(i + 1) }
    }
    if (typeof entry.username === 'string' && typeof entry.password === 'string') return { username: entry.username, password: entry.password }
  }
  return undefined
}

/** A cached bearer token. */
export interface Token {
  token: string
  /** ms since epoch after which the token is refreshed. */
  expiresAt: number
}
