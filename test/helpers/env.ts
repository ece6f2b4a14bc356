/**
 * Guards for tests that need root, /dev/fuse, containerd, ... Locally a missing prerequisite
 * skips the test with the reason; under CI (`CI=true`) it fails instead, so a CI machine that
 * lost a package can never pass by skipping. The probes live with the fixtures (the benchmarks
 * use them too) and are re-exported here for the tests.
 */
export { hasCommand, hasFuse, isRoot } from '../../scripts/fixtures/env.js'

export const inCI = process.env.CI === 'true' || process.env.CI === '1'

export function missing (checks: Record<string, () => boolean>): string | undefined {
  for (const [what, ok] of Object.entries(checks)) {
    let good = false
    try { good = ok() } catch { good = false }
    if (!good) return what
  }
  return undefined
}

/**
 * Returns `true` when the suite should be skipped (local run without the prerequisite), throws
 * under CI. Use as `describe.skipIf(needs({...}))(...)`.
 */
export function needs (checks: Record<string, () => boolean>): boolean {
  const what = missing(checks)
  if (what == null) return false
  if (inCI) throw new Error(`this test needs ${what}, which is missing on this CI machine`)
  console.warn(`skipping: needs ${what}`)
  return true
}
