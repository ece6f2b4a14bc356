import type { ContainerConfig } from '../oci/index.js'
import { DEFAULTS } from './config.js'
import { NoWorkloadError, UnknownUserError } from './errors.js'

/** What the caller changes of the image's own workload (as `ctr-remote image optimize` does). */
export interface WorkloadOverrides {
  /** Replaces the config's Entrypoint. */
  entrypoint?: string[]
  /** Replaces the config's Cmd. */
  args?: string[]
  /** `K=V` sets K (replacing the config's), a bare `K` removes it. */
  env?: string[]
  /** Replaces the config's WorkingDir. */
  cwd?: string
  /** `USER[:GROUP]`, names or numbers; replaces the config's User. */
  user?: string
}

/** The process to run, before its user is resolved against the image. */
export interface Workload {
  args: string[]
  env: string[]
  cwd: string
  /** `USER[:GROUP]` as given; empty for root. */
  user: string
}

/** A resolved user: ids, and the home directory from the image's passwd (for HOME). */
export interface WorkloadUser {
  uid: number
  gid: number
  home: string
}

const MAX_ID = 0xfffffffe

function envKey (kv: string): string {
  const i = kv.indexOf('=')
  return i < 0 ? kv : kv.slice(0, i)
}

/** `env` with `changes` applied: same key replaced in place, new keys appended, bare keys removed. */
function mergeEnv (env: readonly string[], changes: readonly string[]): string[] {
  const out = new Map<string, string>()
  for (const kv of [...env, ...changes]) {
    const key = envKey(kv)
    if (key === '' || key.includes('\0') || kv.includes('\0')) throw new NoWorkloadError(`bad environment entry ${JSON.stringify(kv)}`)
    if (kv.includes('=')) out.set(key, kv)
    else out.delete(key)
  }
  return [...out.values()]
}

/**
 * The workload of an image: Entrypoint + Cmd, Env, WorkingDir (default `/`) and User from its
 * config, each replaced by an override when given. PATH gets containerd's default when the
 * config sets none.
 */
export function workloadOf (config: ContainerConfig | undefined, o: WorkloadOverrides = {}): Workload {
  const entrypoint = o.entrypoint ?? config?.Entrypoint ?? []
  const cmd = o.args ?? config?.Cmd ?? []
  const args = [...entrypoint, ...cmd]
  if (args.length === 0) throw new NoWorkloadError('the image\'s config has no Entrypoint or Cmd; give --entrypoint or --args')
  if (args.some(a => typeof a !== 'string' || a.includes('\0'))) throw new NoWorkloadError('the workload\'s arguments must be strings without NUL bytes')
  let env = mergeEnv(config?.Env ?? [], o.env ?? [])
  if (!env.some(kv => envKey(kv) === 'PATH')) env = [`PATH=${DEFAULTS.defaultPath}`, ...env]
  const cwd = o.cwd ?? (config?.WorkingDir != null && config.WorkingDir !== '' ? config.WorkingDir : '/')
  if (!cwd.startsWith('/') || cwd.includes('\0')) throw new NoWorkloadError(`the working directory must be an absolute path, got ${JSON.stringify(cwd)}`)
  return { args, env, cwd, user: o.user ?? config?.User ?? '' }
}

interface PasswdLine { name: string, uid: number, gid: number, home: string }

function parseId (s: string): number | undefined {
  if (!/^\d+$/.test(s)) return undefined
  const n = Number(s)
  return n <= MAX_ID ? n : undefined
}

function passwdLines (text: string | undefined): PasswdLine[] {
  const out: PasswdLine[] = []
  for (const line of (text ?? '').split('\n')) {
    const f = line.split(':')
    if (f.length < 7) continue
    const uid = parseId(f[2])
    const gid = parseId(f[3])
    if (uid != null && gid != null) out.push({ name: f[0], uid, gid, home: f[5] })
  }
  return out
}

function groupLines (text: string | undefined): Array<{ name: string, gid: number }> {
  const out: Array<{ name: string, gid: number }> = []
  for (const line of (text ?? '').split('\n')) {
    const f = line.split(':')
    if (f.length < 3) continue
    const gid = parseId(f[2])
    if (gid != null) out.push({ name: f[0], gid })
  }
  return out
}

/**
 * Resolves `USER[:GROUP]` as runc does: a number is taken as is (its passwd line, if any, gives
 * the default group and home), a name is looked up in the image's /etc/passwd (or /etc/group);
 * a name that is not there is an error. Root when empty.
 */
export function resolveUser (spec: string, passwd: string | undefined, group: string | undefined): WorkloadUser {
  const [userPart, groupPart] = spec === '' ? ['0', undefined] : spec.split(':', 2)
  const users = passwdLines(passwd)
  const uidNum = parseId(userPart)
  const entry = uidNum != null ? users.find(u => u.uid === uidNum) : users.find(u => u.name === userPart)
  if (uidNum == null && entry == null) throw new UnknownUserError(`user ${JSON.stringify(userPart)} is not in the image's /etc/passwd`)
  const uid = uidNum ?? entry?.uid ?? 0
  let gid = entry?.gid ?? 0
  if (groupPart != null && groupPart !== '') {
    const g = parseId(groupPart) ?? groupLines(group).find(x => x.name === groupPart)?.gid
    if (g == null) throw new UnknownUserError(`group ${JSON.stringify(groupPart)} is not in the image's /etc/group`)
    gid = g
  }
  return { uid, gid, home: entry?.home != null && entry.home !== '' ? entry.home : '/' }
}

/** The workload's environment with HOME set from its user when the config sets none (as runc does). */
export function withHome (env: readonly string[], user: WorkloadUser): string[] {
  return env.some(kv => envKey(kv) === 'HOME') ? [...env] : [...env, `HOME=${user.home}`]
}
