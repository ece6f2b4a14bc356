import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync } from 'node:fs'
import { homedir } from 'node:os'
import { join, resolve } from 'node:path'

/** Repository root. */
export const repoRoot = resolve(import.meta.dirname, '..', '..')

/** Cache for heavy fixtures and built tools, kept between runs (CI caches it too). */
export const cacheDir = process.env.IPFS_ESTARGZ_TEST_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'ipfs-estargz-test')

/**
 * Path of the reference eStargz command (../shared/esgz-ref, built against Debian's Go
 * packages by scripts/setup.sh). Builds it on first use when missing.
 */
export function esgzRef (): string {
  const bin = join(cacheDir, 'bin', 'esgz-ref')
  if (!existsSync(bin)) {
    mkdirSync(join(cacheDir, 'bin'), { recursive: true })
    execFileSync('bash', [join(repoRoot, '..', 'shared', 'esgz-ref', 'build.sh'), join(cacheDir, 'bin')], { stdio: ['ignore', 'ignore', 'inherit'] })
  }
  return bin
}

/** The built CLI (scripts/test.sh runs `npm run build` first). */
export const cliPath = join(repoRoot, 'bin', 'ipfs-estargz.js')
