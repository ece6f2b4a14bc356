import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { parse } from 'smol-toml'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { containerdConfigSnippet, containerdDropIn, mergeContainerdConfig } from '../../src/containerd/config.js'
import { ContainerdConfigError } from '../../src/containerd/errors.js'
import { containerdNeeds, startContainerd, type PrivateContainerd } from '../../scripts/fixtures/containerd.js'
import { startDaemon, type RunningDaemon } from '../../scripts/fixtures/daemon.js'
import { cliPath } from '../../scripts/fixtures/tools.js'
import { hasFuse, needs } from '../helpers/env.js'

const run = promisify(execFile)

interface Doc { proxy_plugins: Record<string, unknown>, plugins: Record<string, { containerd: unknown }> }

/** The shape of `containerd config default` (1.6/1.7) where it matters: the tables our snippet also sets. */
const DEFAULT_LIKE = `version = 2
imports = []
root = "/var/lib/containerd"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.6"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      disable_snapshot_annotations = true
      snapshotter = "overlayfs"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"

[proxy_plugins]

[timeouts]
  "io.containerd.timeout.shim.cleanup" = "5s"
`

describe('containerdConfigSnippet', () => {
  it('registers the proxy snapshotter and the CRI settings in valid TOML', () => {
    const doc = parse(containerdConfigSnippet()) as unknown as Doc
    expect(doc.proxy_plugins['ipfs-estargz']).toEqual({ type: 'snapshot', address: '/run/ipfs-estargz/snapshotter.sock' })
    expect(doc.plugins['io.containerd.grpc.v1.cri'].containerd).toEqual({ snapshotter: 'ipfs-estargz', disable_snapshot_annotations: false })
  })

  it('takes another name and socket, and can leave CRI out', () => {
    const doc = parse(containerdConfigSnippet({ name: 'x', address: '/tmp/s.sock', cri: false })) as unknown as Doc
    expect(doc).toEqual({ proxy_plugins: { x: { type: 'snapshot', address: '/tmp/s.sock' } } })
  })

  it('for containerd 2 uses the CRI images plugin and asks the transfer service for the layer labels', () => {
    const doc = parse(containerdConfigSnippet({ containerdVersion: 2 })) as Record<string, any>
    expect(doc.proxy_plugins['ipfs-estargz']).toEqual({ type: 'snapshot', address: '/run/ipfs-estargz/snapshotter.sock', exports: { enable_remote_snapshot_annotations: 'true' } })
    expect(doc.plugins).toEqual({ 'io.containerd.cri.v1.images': { snapshotter: 'ipfs-estargz', disable_snapshot_annotations: false } })
  })

  it('appended to a default config, redefines its CRI table (why --merge exists)', () => {
    expect(() => parse(DEFAULT_LIKE + containerdConfigSnippet())).toThrow(/already|defined|overrid/i)
  })
})

describe('mergeContainerdConfig', () => {
  it('sets our settings in a default-like config and keeps everything else', () => {
    const doc = parse(mergeContainerdConfig(DEFAULT_LIKE, { address: '/tmp/x.sock' })) as Record<string, any>
    const cri = doc.plugins['io.containerd.grpc.v1.cri']
    expect(cri.containerd).toEqual({ default_runtime_name: 'runc', disable_snapshot_annotations: false, snapshotter: 'ipfs-estargz', runtimes: { runc: { runtime_type: 'io.containerd.runc.v2' } } })
    expect(cri.sandbox_image).toBe('registry.k8s.io/pause:3.6')
    expect(doc.proxy_plugins).toEqual({ 'ipfs-estargz': { type: 'snapshot', address: '/tmp/x.sock' } })
    expect(doc.timeouts).toEqual({ 'io.containerd.timeout.shim.cleanup': '5s' })
    expect(doc).toMatchObject({ version: 2, imports: [], root: '/var/lib/containerd' })
  })

  it('is idempotent and replaces an older registration of ours', () => {
    const once = mergeContainerdConfig(DEFAULT_LIKE, { address: '/tmp/old.sock' })
    const twice = mergeContainerdConfig(once, { address: '/tmp/new.sock' })
    expect((parse(twice) as unknown as Doc).proxy_plugins['ipfs-estargz']).toEqual({ type: 'snapshot', address: '/tmp/new.sock' })
    expect(mergeContainerdConfig(twice, { address: '/tmp/new.sock' })).toBe(twice)
  })

  it('takes an empty file as a new config of the right version', () => {
    expect(parse(mergeContainerdConfig('', { containerdVersion: 2, cri: false }))).toEqual({
      version: 3, proxy_plugins: { 'ipfs-estargz': { type: 'snapshot', address: '/run/ipfs-estargz/snapshotter.sock', exports: { enable_remote_snapshot_annotations: 'true' } } }
    })
  })

  it('refuses a config of another version, invalid TOML and a value where a table belongs, with ERR_CONTAINERD_CONFIG', () => {
    expect(() => mergeContainerdConfig('root = "/x"\n[plugins.cri]\n')).toThrow(expect.objectContaining({ code: 'ERR_CONTAINERD_CONFIG', message: expect.stringMatching(/version = 1.*containerd config migrate/) }))
    expect(() => mergeContainerdConfig(DEFAULT_LIKE, { containerdVersion: 2 })).toThrow(/version = 2; containerd 2.x reads version 3 \(use --containerd-version 1\)/)
    expect(() => mergeContainerdConfig('version = 2\n[plugins\n')).toThrow(ContainerdConfigError)
    expect(() => mergeContainerdConfig('version = 2\nproxy_plugins = "x"\n')).toThrow(/proxy_plugins to a value where a table is expected/)
  })
})

describe('containerdDropIn', () => {
  it('holds only the proxy plugin (containerd replaces whole plugin sections from imports), with the version line', () => {
    expect(parse(containerdDropIn({ address: '/tmp/s.sock' }))).toEqual({ version: 2, proxy_plugins: { 'ipfs-estargz': { type: 'snapshot', address: '/tmp/s.sock' } } })
    expect(parse(containerdDropIn({ containerdVersion: 2 }))).toMatchObject({ version: 3 })
  })
})

describe.skipIf(needs({ ...containerdNeeds, fuse: hasFuse }))('containerd-config with a real containerd', () => {
  let dir: string
  let daemon: RunningDaemon | undefined
  let ctrd: PrivateContainerd | undefined

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ccfg-'))
    daemon = await startDaemon({ root: join(dir, 'node'), listen: ['/ip4/127.0.0.1/tcp/0'] })
  }, 90_000)

  afterAll(async () => {
    await ctrd?.stop()
    await daemon?.stop()
    await rm(dir, { recursive: true, force: true })
  }, 60_000)

  it('`containerd config default` merged with the CLI\'s output starts, serves CRI and reaches our snapshotter', async () => {
    const defaults = (await run('containerd', ['config', 'default'])).stdout
    await writeFile(join(dir, 'default.toml'), defaults)
    const merged = (await run(cliPath, ['containerd-config', '--merge', join(dir, 'default.toml'), '--address', daemon!.address])).stdout
    // what containerd itself reads from the file
    await writeFile(join(dir, 'merged.toml'), merged)
    const dump = parse((await run('containerd', ['--config', join(dir, 'merged.toml'), 'config', 'dump'])).stdout) as Record<string, any>
    expect(dump.proxy_plugins['ipfs-estargz']).toEqual({ type: 'snapshot', address: daemon!.address })
    expect(dump.plugins['io.containerd.grpc.v1.cri'].containerd).toMatchObject({ snapshotter: 'ipfs-estargz', disable_snapshot_annotations: false })

    ctrd = await startContainerd({ baseConfig: merged })
    const plugins = await ctrd.ctr(['plugins', 'ls'])
    expect(plugins).toMatch(/io\.containerd\.snapshotter\.v1\s+ipfs-estargz\s+\S+\s+ok/)
    expect(plugins).toMatch(/io\.containerd\.grpc\.v1\s+cri\s+\S+\s+ok/)
    // a call through the proxy plugin answered by the daemon: an empty list, not an error
    expect(await ctrd.ctr(['snapshots', '--snapshotter', 'ipfs-estargz', 'ls'])).toMatch(/^KEY\s+PARENT\s+KIND\s*$/)
  }, 120_000)
})
