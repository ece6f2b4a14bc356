import { spawnSync } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parse } from 'smol-toml'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DEFAULTS, loadConfig } from '../../src/daemon/config.js'
import { cliPath } from '../../scripts/fixtures/tools.js'

function cli (args: string[]): { code: number, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8' })
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr }
}

describe('config show', () => {
  let dir: string
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'config-show-')) })
  afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

  it('prints the effective configuration: the file\'s values over the defaults, as TOML the daemon reads back', async () => {
    const file = join(dir, 'config.toml')
    await writeFile(file, '[fs]\nprefetch_timeout_sec = 3\n[http]\naddress = "127.0.0.1:9100"\n[ipfs]\npeers = ["/ip4/10.0.0.2/tcp/4001/p2p/12D3KooWA"]\n')
    const r = cli(['config', 'show', '--config', file])
    expect(r.code, r.stderr).toBe(0)
    const shown = parse(r.stdout) as Record<string, Record<string, unknown>>
    expect(shown.fs.prefetch_timeout_sec).toBe(3)
    expect(shown.http.address).toBe('127.0.0.1:9100')
    expect(shown.ipfs.peers).toEqual(['/ip4/10.0.0.2/tcp/4001/p2p/12D3KooWA'])
    // what the file leaves out is the default
    expect(shown.fs.fetch_timeout_sec).toBe(DEFAULTS.fs.fetchTimeoutSec)
    expect(shown.http.public).toBe(false)
    expect(shown.root).toBe(DEFAULTS.root)
    // the output is a configuration file that loads to the same configuration
    const again = join(dir, 'again.toml')
    await writeFile(again, r.stdout)
    expect({ ...await loadConfig(again), config: file }).toEqual({ ...await loadConfig(file), config: file })
    const json = cli(['config', 'show', '--config', file, '--json'])
    expect(json.code, json.stderr).toBe(0)
    expect(JSON.parse(json.stdout)).toEqual(shown)
  })

  it('a file with an unknown setting, or one that is missing, is an error', async () => {
    const bad = join(dir, 'bad.toml')
    await writeFile(bad, '[fs]\nprefetch_timeout = 3\n')
    const r = cli(['config', 'show', '--config', bad])
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/unknown setting "prefetch_timeout"/)
    expect(r.stdout).toBe('')
    const missing = cli(['config', 'show', '--config', join(dir, 'none.toml')])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/cannot read config/)
  })
})
