import { InvalidPlatformError } from './errors.js'
import type { Platform } from './types.js'

/** Architecture aliases people type (uname -m) mapped to the GOARCH names images use. */
const ARCH_ALIASES: Record<string, string> = {
  x86_64: 'amd64', 'x86-64': 'amd64', aarch64: 'arm64', armhf: 'arm', armel: 'arm', i386: '386', i686: '386'
}

/** Normalizes arch and the implied variants (arm64 → v8, arm → v7), as containerd's platforms package does. */
export function normalizePlatform (p: Platform): Platform {
  const os = p.os.toLowerCase()
  let architecture = p.architecture.toLowerCase()
  let variant = p.variant?.toLowerCase()
  architecture = ARCH_ALIASES[architecture] ?? architecture
  if (p.architecture.toLowerCase() === 'armel' && variant == null) variant = 'v6'
  if (architecture === 'arm64' && (variant === '8' || variant === 'v8')) variant = undefined
  if (architecture === 'arm' && (variant == null || variant === '7')) variant = 'v7'
  if (architecture === 'arm' && variant != null && /^[5-8]$/.test(variant)) variant = `v${variant}`
  const out: Platform = { os, architecture }
  if (variant != null && variant !== '') out.variant = variant
  return out
}

/** Parses `os/arch[/variant]` (e.g. `linux/amd64`, `linux/arm64/v8`). */
export function parsePlatform (s: string): Platform {
  const parts = s.split('/')
  if (parts.length < 2 || parts.length > 3 || parts.some(p => !/^[A-Za-z0-9_.-]+$/.test(p))) {
    throw new InvalidPlatformError(`invalid platform ${JSON.stringify(s)} (want os/arch[/variant], e.g. linux/amd64)`)
  }
  const p: Platform = { os: parts[0], architecture: parts[1] }
  if (parts[2] != null) p.variant = parts[2]
  return normalizePlatform(p)
}

export function formatPlatform (p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(x => x != null && x !== '').join('/')
}

/**
 * Whether an image's platform satisfies a wanted one: same os and arch; the variant must match
 * when the wanted platform names one (after normalization, so `linux/arm64` matches `arm64/v8`).
 */
export function platformMatches (have: Platform, want: Platform): boolean {
  const h = normalizePlatform(have)
  const w = normalizePlatform(want)
  if (h.os !== w.os || h.architecture !== w.architecture) return false
  if (w.variant != null && w.variant !== h.variant) return false
  return true
}

/** The platform of the running Node process, in image terms. */
export function hostPlatform (): Platform {
  const arch: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' }
  return normalizePlatform({ os: process.platform === 'win32' ? 'windows' : process.platform, architecture: arch[process.arch] ?? process.arch })
}
