import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { packageJson as pkg } from '../../scripts/fixtures/pack.js'
import { repoRoot } from '../../scripts/fixtures/tools.js'

/**
 * Dependencies the package does not bundle: better-sqlite3's binary is built for one Node ABI,
 * so a consumer's npm installs it for theirs. Everything else ships in the tarball exactly as
 * the lockfile resolved it: npm applies `overrides` only to the project it installs, so a
 * consumer's npm would otherwise pick undici 8 (which fails at import on Node 20) and the real
 * react-native-webrtc (which brings React Native along).
 */
const NOT_BUNDLED = ['better-sqlite3']

/**
 * The package's manifest. `npm pack` itself takes minutes here (it compresses the ~170 MB of
 * bundled dependencies, even for --dry-run): the tarball's contents and its install into a
 * clean prefix are `npm run test:install` (test/install/).
 */
describe('the npm package', () => {
  it('bundles every dependency but the ABI-specific one, and has no install script of its own', () => {
    expect([...pkg.bundleDependencies].sort()).toEqual(Object.keys(pkg.dependencies).filter(d => !NOT_BUNDLED.includes(d)).sort())
    // a consumer's npm warns about install scripts it was not told to allow; the xsalsa20 patch
    // runs when the checkout's node_modules changes and before packing, so the bundle has it
    expect(Object.keys(pkg.scripts).filter(s => /^(pre|post)?(install|prepare)$/.test(s))).toEqual([])
    expect(pkg.scripts.dependencies).toBe('node scripts/patch-xsalsa20.cjs && node scripts/patch-yamux.cjs')
    expect(pkg.scripts.prepack).toBe('node scripts/patch-xsalsa20.cjs && node scripts/patch-yamux.cjs')
  })

  it('runs on patched dependencies (the patches npm applies after it changes node_modules)', () => {
    const read = (...p: string[]): string => readFileSync(join(repoRoot, 'node_modules', ...p), 'utf8')
    expect(read('xsalsa20', 'index.js')).toContain('/* patched: refresh view */')
    expect(read('@libp2p', 'yamux', 'dist', 'src', 'stream.js')).toContain('/* patched: half-window updates */')
  })

  it('packs the command, the compiled code and the service unit', () => {
    expect(pkg.bin).toEqual({ 'ipfs-estargz': 'bin/ipfs-estargz.js' })
    expect(pkg.files).toEqual(expect.arrayContaining(['bin', 'dist', 'proto', 'scripts/patch-xsalsa20.cjs', 'scripts/patch-yamux.cjs', 'scripts/systemd']))
    for (const f of [pkg.bin['ipfs-estargz'], 'scripts/systemd/ipfs-estargz.service']) expect(existsSync(join(repoRoot, f)), f).toBe(true)
  })
})
