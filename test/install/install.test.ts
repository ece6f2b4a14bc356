import { execFile } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { allBlobs, makeImage, tagged, writeLayout } from '../../scripts/fixtures/oci-image.js'
import { makeTar } from '../../scripts/fixtures/tar.js'
import { repoRoot } from '../../scripts/fixtures/tools.js'
import { npmPack, packageJson, stagePackage } from '../../scripts/fixtures/pack.js'

const run = promisify(execFile)

const pkg = packageJson

/**
 * `npm run test:install` (minutes: npm compresses and unpacks the ~170 MB of bundled
 * dependencies; test/cli/package.test.ts checks the manifest in the default suite): `npm pack`,
 * then `npm install -g` of the tarball into an empty prefix, the way a user installs the node; then the installed command runs. npm works from its cache first (only the npm
 * registry is reachable). The one thing fetched from elsewhere in a user's install is
 * better-sqlite3's prebuilt binary (from GitHub, by prebuild-install): here prebuild-install is
 * handed the binary this checkout built for the same Node, as its `local-prebuilds` option
 * allows, instead of compiling SQLite for minutes.
 */
describe('the packed package, installed with npm into a clean prefix', () => {
  let dir: string
  let prefix: string
  let bin: string
  let installed: string
  let installLog = ''
  let tarball: string
  let files: Set<string>

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'install-'))
    prefix = join(dir, 'prefix')
    bin = join(prefix, 'bin', 'ipfs-estargz')
    installed = join(prefix, 'lib', 'node_modules', 'ipfs-estargz')
    const stage = join(dir, 'stage')
    await stagePackage(stage)
    const packed = await npmPack(stage, dir)
    tarball = packed.tarball
    files = new Set(packed.files.map(f => f.path))
    await rm(stage, { recursive: true, force: true })

    // prebuild-install's file name for this Node's ABI
    const sqlite = JSON.parse(readFileSync(join(repoRoot, 'node_modules', 'better-sqlite3', 'package.json'), 'utf8')) as { version: string }
    const prebuilds = join(dir, 'prebuilds')
    await mkdir(prebuilds)
    await run('tar', ['czf', join(prebuilds, `better-sqlite3-v${sqlite.version}-node-v${process.versions.modules}-${process.platform}-${process.arch}.tar.gz`),
      '-C', join(repoRoot, 'node_modules', 'better-sqlite3'), 'build/Release/better_sqlite3.node'])

    const env = { ...process.env, npm_config_better_sqlite3_local_prebuilds: prebuilds, npm_config_update_notifier: 'false' }
    const r = await run('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', '--allow-scripts=better-sqlite3', tarball],
      { env, maxBuffer: 1 << 26, timeout: 600_000 })
    installLog = r.stdout + r.stderr
  }, 900_000)

  afterAll(async () => { if (dir != null) await rm(dir, { recursive: true, force: true }) })

  it('packs the command, the compiled code, the service unit and the bundle with the working versions', () => {
    for (const f of ['bin/ipfs-estargz.js', 'dist/cli/entry.js', 'dist/cli/main.js', 'proto/containerd/types/mount.proto', 'scripts/systemd/ipfs-estargz.service',
      'node_modules/undici/package.json', 'node_modules/react-native-webrtc/package.json', 'node_modules/helia/package.json']) {
      expect(files.has(f), f).toBe(true)
    }
    expect([...files].filter(f => /^node_modules\/(react-native|better-sqlite3)\//.test(f))).toEqual([])
    expect([...files].filter(f => /^(test|src|stubs)\//.test(f))).toEqual([])
  })

  it('installs with working dependency versions and without React Native', async () => {
    expect(installLog).not.toMatch(/EBADENGINE|ERESOLVE|deprecated|install-scripts/)
    const version = async (name: string): Promise<string> => (JSON.parse(await readFile(join(installed, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version
    expect(await version('undici')).toMatch(/^7\./)
    expect(existsSync(join(installed, 'node_modules', 'react-native'))).toBe(false)
    expect(await readFile(join(installed, 'node_modules', 'xsalsa20', 'index.js'), 'utf8')).toContain('/* patched: refresh view */')
    expect(await readFile(join(installed, 'node_modules', '@libp2p', 'yamux', 'dist', 'src', 'stream.js'), 'utf8')).toContain('/* patched: half-window updates */')
    // one copy of each: nothing resolved a second undici under a dependent
    const nested = await readdir(join(installed, 'node_modules', '@libp2p', 'http')).catch(() => [])
    expect(nested).not.toContain('node_modules')
  })

  it('runs --version, layer build and push from the prefix', async () => {
    expect((await run(bin, ['--version'])).stdout).toBe(`${pkg.version}\n`)

    await writeFile(join(dir, 'in.tar'), makeTar([{ name: 'hello.txt', data: 'hello from an installed package\n' }]))
    const built = await run(bin, ['layer', 'build', join(dir, 'in.tar'), join(dir, 'out.esgz')])
    expect(JSON.parse(built.stdout)).toMatchObject({ tocDigest: expect.stringMatching(/^sha256:[0-9a-f]{64}$/), diffID: expect.stringMatching(/^sha256:/) })
    expect((await run(bin, ['layer', 'cat', join(dir, 'out.esgz'), 'hello.txt'])).stdout).toBe('hello from an installed package\n')

    const image = makeImage({ seed: 'installed' })
    await writeLayout(join(dir, 'img'), allBlobs(image), [tagged(image.manifest.descriptor, 'latest')])
    const pushed = await run(bin, ['push', `oci:${join(dir, 'img')}`, '--repo', join(dir, 'repo'), '--level', '1'], { timeout: 120_000 })
    expect(pushed.stdout.trim()).toMatch(/^baf[a-z2-7]{50,}$/)
  }, 180_000)
})
