import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DEFAULTS, loadConfig } from '../../src/daemon/config.js'
import { ConfigConflictError, ConfigError } from '../../src/daemon/errors.js'
import { DEFAULT_API_ADDRESS } from '../../src/daemon/control.js'
import { Daemon, apiAddressFor, mirrorOptions } from '../../src/daemon/daemon.js'
import { silentLogger } from '../../src/logging.js'

describe('daemon configuration', () => {
  let dir: string
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'config-')) })
  afterAll(async () => { await rm(dir, { recursive: true, force: true }) })
  const file = async (text: string): Promise<string> => {
    const p = join(dir, `${Math.random().toString(16).slice(2)}.toml`)
    await writeFile(p, text)
    return p
  }

  it('takes snake_case keys over the defaults and keeps the rest', async () => {
    const c = await loadConfig(await file('root = "/srv/x"\n[fs]\nbackground_fetch = false\nfetch_timeout_sec = 3\n[ipfs]\npeers = ["/ip4/127.0.0.1/tcp/1/p2p/x"]\ngateways = ["https://gw.example"]\n'))
    expect(c.root).toBe('/srv/x')
    expect(c.fs.backgroundFetch).toBe(false)
    expect(c.fs.fetchTimeoutSec).toBe(3)
    expect(c.fs.prefetchTimeoutSec).toBe(DEFAULTS.fs.prefetchTimeoutSec)
    expect(c.ipfs.peers).toEqual(['/ip4/127.0.0.1/tcp/1/p2p/x'])
    expect(c.ipfs.gateways).toEqual(['https://gw.example'])
    expect(c.address).toBe(DEFAULTS.address)
  })

  it('[ipfs] blockstore: pack by default, the one ipfs uses, and the kind a new repo gets from the daemon\'s settings', async () => {
    const { DEFAULTS: STORE_DEFAULTS } = await import('../../src/ipfs/local-blockstore.js')
    const { nodeOptionsFor } = await import('../../src/daemon/p2p.js')
    expect(DEFAULTS.ipfs.blockstore).toBe(STORE_DEFAULTS.kind)
    const c = await loadConfig(await file('[ipfs]\nblockstore = "lmdb"\n'))
    expect((await nodeOptionsFor(c.ipfs)).blockstore).toBe('lmdb')
  })

  it('[mirror]: off and on loopback by default; its settings become the listener\'s options in ms', async () => {
    expect(DEFAULTS.mirror).toMatchObject({ enable: false, address: '127.0.0.1:5380', public: false, credentials: '' })
    const c = await loadConfig(await file('[mirror]\nenable = true\naddress = "0.0.0.0:5000"\npublic = true\ncredentials = "/etc/ipfs-estargz/mirror.users"\nidle_timeout_sec = 20\nmax_streams = 8\n'))
    expect(mirrorOptions(c)).toMatchObject({ address: '0.0.0.0:5000', public: true, credentials: '/etc/ipfs-estargz/mirror.users', idleTimeoutMs: 20_000, maxStreams: 8, headersTimeoutMs: 10_000 })
    await expect(loadConfig(await file('[mirror]\nport = 5000\n'))).rejects.toThrow(ConfigError)
  })

  it('the CLI looks for a daemon without a named repo where a daemon with the default addresses listens', () => {
    expect(apiAddressFor(DEFAULTS)).toBe(DEFAULT_API_ADDRESS)
  })

  it('every timeout of the FUSE manager calls is a setting', async () => {
    const c = await loadConfig(await file('[fuse_manager]\ncall_timeout_sec = 45\nhealth_check_timeout_sec = 2\n[snapshotter]\nremote_mount_timeout_sec = 120\n'))
    expect(c.fuseManager).toMatchObject({ callTimeoutSec: 45, healthCheckTimeoutSec: 2 })
    expect(c.snapshotter.remoteMountTimeoutSec).toBe(120)
    expect(DEFAULTS.fuseManager).toMatchObject({ callTimeoutSec: 30, healthCheckTimeoutSec: 5 })
  })

  it('refuses (ERR_CONFIG_CONFLICT) a FUSE manager call timeout not above the prefetch timeout, in the file and at the daemon\'s start', async () => {
    expect(DEFAULTS.fuseManager.callTimeoutSec).toBeGreaterThan(DEFAULTS.fs.prefetchTimeoutSec)
    for (const toml of ['[fuse_manager]\ncall_timeout_sec = 10\n', '[fuse_manager]\ncall_timeout_sec = 5\n', '[fs]\nprefetch_timeout_sec = 45\n']) {
      const err = await loadConfig(await file(toml)).catch((e: unknown) => e)
      expect(err, toml).toBeInstanceOf(ConfigConflictError)
      expect(err).toMatchObject({ code: 'ERR_CONFIG_CONFLICT', message: expect.stringMatching(/call_timeout_sec \(\d+\) must be greater than \[fs\] prefetch_timeout_sec \(\d+\)/) })
    }
    expect((await loadConfig(await file('[fs]\nprefetch_timeout_sec = 3\n[fuse_manager]\ncall_timeout_sec = 4\n'))).fuseManager.callTimeoutSec).toBe(4)
    // without the FUSE manager no call waits for a prefetch
    expect((await loadConfig(await file('[fuse_manager]\nenable = false\ncall_timeout_sec = 5\n'))).fuseManager.enable).toBe(false)
    // a config built in code: the daemon refuses to start, before it creates anything
    const root = join(dir, 'never-created')
    const d = new Daemon({ logger: silentLogger(), runCommand: async () => 0 }, { ...structuredClone(DEFAULTS), root, fuseManager: { ...DEFAULTS.fuseManager, callTimeoutSec: 10 } })
    await expect(d.start()).rejects.toMatchObject({ code: 'ERR_CONFIG_CONFLICT' })
    expect(existsSync(root)).toBe(false)
  })

  it('refuses unknown keys, wrong types, bad TOML and a missing explicit file, naming the problem', async () => {
    await expect(loadConfig(await file('[fs]\nbackgrund_fetch = false\n'))).rejects.toThrow(/unknown setting "backgrund_fetch"/)
    await expect(loadConfig(await file('[fs]\nfetch_timeout_sec = "3"\n'))).rejects.toThrow(/fetch_timeout_sec must be a number/)
    await expect(loadConfig(await file('[ipfs]\npeers = [1]\n'))).rejects.toThrow(/list of strings/)
    await expect(loadConfig(await file('root = \n'))).rejects.toBeInstanceOf(ConfigError)
    await expect(loadConfig(join(dir, 'missing.toml'))).rejects.toThrow(/cannot read config/)
  })
})
