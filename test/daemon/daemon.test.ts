import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type * as grpc from '@grpc/grpc-js'
import { FuseManagerClient, type Health } from '../../src/fusemgr/index.js'
import { CONFORMANCE_CASES, conformanceAvailable, runConformance } from '../helpers/conformance.js'
import { startDaemon, type RunningDaemon } from '../../scripts/fixtures/daemon.js'
import { hasCommand, hasFuse, isRoot, needs } from '../helpers/env.js'
import { makeImage, tagged, writeLayout, allBlobs } from '../../scripts/fixtures/oci-image.js'
import { snapshotsClient, type SnapshotsClient } from '../../scripts/fixtures/snapshots-client.js'
import { chainIds } from '../../scripts/fixtures/digest.js'
import { removeWorkDir } from '../../scripts/fixtures/work-dir.js'
import { runCli as cli } from '../../scripts/fixtures/run.js'

/** Mounts what the snapshotter returned at `at` (as containerd would), runs `fn`, unmounts. */
async function withMounts<T> (mounts: Array<{ type: string, source: string, options: string[] }>, at: string, fn: () => Promise<T>): Promise<T> {
  const m = mounts[0]
  const opts = m.options.filter(o => o !== 'rbind')
  const r = spawnSync('mount', [...(m.type === 'bind' ? ['--bind'] : ['-t', m.type]), ...(opts.length > 0 ? ['-o', opts.join(',')] : []), m.source, at], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`mount failed: ${r.stderr}`)
  try {
    return await fn()
  } finally {
    spawnSync('umount', [at])
  }
}

const REMOTE = 'containerd.io/snapshot/remote'

describe.skipIf(needs({ root: isRoot, fuse: hasFuse, fusermount: hasCommand('fusermount'), go: conformanceAvailable }))('ipfs-estargz daemon (snapshotter with lazy IPFS layers)', () => {
  let dir: string
  let a: RunningDaemon
  let b: RunningDaemon
  let client: SnapshotsClient
  const image = makeImage({ seed: 'daemon', layerSize: 200_000 })
  let layers: Array<{ digest: string, cid: string, tocDigest: string, diffID: string }>
  let chain: string[]

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'daemon-test-'))
    await writeLayout(join(dir, 'img'), allBlobs(image), [tagged(image.manifest.descriptor, 'latest')])
    a = await startDaemon({ root: join(dir, 'a'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    // pushed through A's control API: A owns the repo
    const pushed = await cli(['push', `oci:${join(dir, 'img')}`, '--repo', join(dir, 'a'), '--json', '--chunk-size', '65536'])
    if (pushed.code !== 0) throw new Error(pushed.stderr)
    layers = (JSON.parse(pushed.stdout) as { images: Array<{ layers: typeof layers }> }).images[0].layers
    chain = chainIds(layers.map(l => l.diffID))
    const peer = (JSON.parse((await cli(['id', '--repo', join(dir, 'a')])).stdout) as { addresses: string[] }).addresses[0]
    b = await startDaemon({ root: join(dir, 'b'), peers: [peer], config: '[fs]\nfetch_timeout_sec = 3\n[snapshotter]\nremote_mount_timeout_sec = 10\n' })
    client = snapshotsClient(b.address)
  }, 300_000)

  afterAll(async () => {
    client?.close()
    await b?.stop()
    await a?.stop()
    if (dir != null) await removeWorkDir(dir)
  })

  it('passes containerd\'s snapshotter suite against the running daemon', async () => {
    const r = await runConformance(b.address, dir)
    if (r.failed.length > 0 || r.code !== 0) console.error(r.output)
    expect(r.failed).toEqual([])
    expect(r.passed).toEqual(CONFORMANCE_CASES)
  }, 1_800_000)

  const prepareRemote = async (i: number): Promise<grpc.ServiceError | undefined> => {
    const labels = {
      'containerd.io/snapshot.ref': chain[i],
      'containerd.io/snapshot/remote/urls': `ipfs://${layers[i].cid}`,
      'containerd.io/snapshot/stargz/toc.digest': layers[i].tocDigest
    }
    return await client.prepare(`extract-${i} ${chain[i]}`, i === 0 ? '' : chain[i - 1], labels).then(() => undefined, (e: grpc.ServiceError) => e)
  }

  it('mounts layers lazily from a peer: Prepare answers AlreadyExists and the committed snapshots read right', async () => {
    for (let i = 0; i < layers.length; i++) {
      const err = await prepareRemote(i)
      expect(err?.code, err?.message).toBe(6) // AlreadyExists: committed as a remote snapshot
    }
    const found = await client.list(`labels."containerd.io/snapshot.ref"==${chain[1]},parent==${chain[0]}`)
    expect(found.map(f => f.name)).toEqual([chain[1]])
    expect(found[0].labels[REMOTE]).toBe('remote snapshot')
    const mounts = await client.view('v-top', chain[1])
    const at = await mkdtemp(join(dir, 'view-'))
    await withMounts(mounts, at, async () => {
      for (let i = 0; i < layers.length; i++) {
        expect(await readFile(join(at, `dir${i}`, 'big.bin'))).toEqual(Buffer.alloc(200_000, i + 1))
        expect(await readFile(join(at, `dir${i}`, 'file.txt'), 'utf8')).toBe(`layer ${i} of amd64 daemon\n`.repeat(1 + i))
      }
    })
    await client.remove('v-top')
  })

  it('falls back to a normal snapshot when the layer cannot be fetched, and says why', async () => {
    const labels = {
      'containerd.io/snapshot.ref': 'sha256:' + 'f'.repeat(64),
      'containerd.io/snapshot/remote/urls': 'ipfs://bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy',
      'containerd.io/snapshot/stargz/toc.digest': 'sha256:' + 'e'.repeat(64)
    }
    const mounts = await client.prepare('fallback-1', '', labels)
    expect(mounts[0].type).toBe('bind')
    const info = await client.stat('fallback-1')
    expect(info.kind).toBe('ACTIVE')
    // the mount gave up after the fetch timeout (3 s), before the mount timeout (10 s)
    expect(info.labels['ipfs-estargz/fallback-reason']).toMatch(/^mount-failed: /)
    expect(b.log()).toMatch(/remote-snapshot-prepared/)
    await client.remove('fallback-1')
  }, 120_000)

  it('after kill -9 and a restart, every snapshot, label and mount is as before', async () => {
    // a normal snapshot chain too
    const m = await client.prepare('normal-active', '')
    const at = await mkdtemp(join(dir, 'normal-'))
    await withMounts(m, at, async () => { await (await import('node:fs/promises')).writeFile(join(at, 'hello'), 'kept') })
    await client.commit('normal-committed', 'normal-active', { mine: 'yes' })
    const before = (await client.list()).map(i => ({ name: i.name, parent: i.parent, kind: i.kind, labels: i.labels })).sort((x, y) => x.name.localeCompare(y.name))
    const managerBefore = (await new FuseManagerClient(join(dir, 'b', 'fuse-manager.sock')).health()).pid
    client.close()
    await b.kill()
    b = await startDaemon({ root: join(dir, 'b'), peers: [], config: '[fs]\nfetch_timeout_sec = 3\n[fuse_manager]\nhealth_check_interval_sec = 1\n' })
    client = snapshotsClient(b.address)
    const after = (await client.list()).map(i => ({ name: i.name, parent: i.parent, kind: i.kind, labels: i.labels })).sort((x, y) => x.name.localeCompare(y.name))
    expect(after).toEqual(before)
    // the lazy mounts lived on in the FUSE manager and were kept, not mounted anew
    expect((await new FuseManagerClient(join(dir, 'b', 'fuse-manager.sock')).health()).pid).toBe(managerBefore)
    expect(b.log()).toMatch(/remote snapshot still mounted: kept/)
    // the remote layers are mounted again (their blocks are cached locally now)
    const view = await client.view('v-after', chain[1])
    const at2 = await mkdtemp(join(dir, 'after-'))
    await withMounts(view, at2, async () => {
      expect(await readFile(join(at2, 'dir1', 'big.bin'))).toEqual(Buffer.alloc(200_000, 2))
    })
    const nm = await client.view('v-normal', 'normal-committed')
    const at3 = await mkdtemp(join(dir, 'normal2-'))
    await withMounts(nm, at3, async () => { expect(await readFile(join(at3, 'hello'), 'utf8')).toBe('kept') })
    await client.remove('v-after')
    await client.remove('v-normal')
  }, 300_000)

  it('when the FUSE manager dies, the daemon starts a new one and mounts the remote snapshots again', async () => {
    const fm = new FuseManagerClient(join(dir, 'b', 'fuse-manager.sock'))
    const { pid, mounts } = await fm.health()
    expect(mounts).toBe(layers.length)
    process.kill(pid, 'SIGKILL')
    let fresh: Health | undefined
    for (let i = 0; i < 100 && (fresh?.pid == null || fresh.pid === pid || fresh.mounts < layers.length); i++) {
      await new Promise(resolve => setTimeout(resolve, 200))
      fresh = await fm.health().catch(() => undefined)
    }
    expect(fresh?.pid).not.toBe(pid)
    expect(fresh?.mounts).toBe(layers.length)
    expect(b.log()).toMatch(/the FUSE manager is gone/)
    const view = await client.view('v-recovered', chain[1])
    const at = await mkdtemp(join(dir, 'recovered-'))
    await withMounts(view, at, async () => {
      expect(await readFile(join(at, 'dir0', 'big.bin'))).toEqual(Buffer.alloc(200_000, 1))
      expect(await readFile(join(at, 'dir1', 'big.bin'))).toEqual(Buffer.alloc(200_000, 2))
    })
    await client.remove('v-recovered')
  }, 120_000)

  it('with [fuse_manager] enable = false the lazy mounts live in the daemon process', async () => {
    const peer = (JSON.parse((await cli(['id', '--repo', join(dir, 'a')])).stdout) as { addresses: string[] }).addresses[0]
    const c = await startDaemon({ root: join(dir, 'c'), peers: [peer], config: '[fuse_manager]\nenable = false\n' })
    const cc = snapshotsClient(c.address)
    try {
      const labels = {
        'containerd.io/snapshot.ref': chain[0],
        'containerd.io/snapshot/remote/urls': `ipfs://${layers[0].cid}`,
        'containerd.io/snapshot/stargz/toc.digest': layers[0].tocDigest
      }
      const err = await cc.prepare(`extract-0 ${chain[0]}`, '', labels).then(() => undefined, (e: grpc.ServiceError) => e)
      expect(err?.code, err?.message).toBe(6)
      expect(existsSync(join(dir, 'c', 'fuse-manager.sock'))).toBe(false)
      const fuse = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter(l => l.includes(join(dir, 'c')) && l.includes(' - fuse'))
      expect(fuse.length).toBe(1)
      const view = await cc.view('v-c', chain[0])
      const at = await mkdtemp(join(dir, 'inproc-'))
      await withMounts(view, at, async () => {
        expect(await readFile(join(at, 'dir0', 'big.bin'))).toEqual(Buffer.alloc(200_000, 1))
      })
      await cc.remove('v-c')
    } finally {
      cc.close()
      await c.stop()
    }
    // stopping the daemon took its mounts with it
    expect((await readFile('/proc/self/mountinfo', 'utf8')).includes(join(dir, 'c'))).toBe(false)
  }, 120_000)

  it('resolves layers from the digest index when only CRI labels are sent', async () => {
    const ca = snapshotsClient(a.address)
    try {
      const err = await ca.prepare(`extract-cri ${chain[0]}`, '', {
        'containerd.io/snapshot.ref': chain[0],
        'containerd.io/snapshot/cri.layer-digest': layers[0].digest,
        'containerd.io/snapshot/stargz/toc.digest': layers[0].tocDigest
      }).then(() => undefined, (e: grpc.ServiceError) => e)
      expect(err?.code, err?.message).toBe(6)
    } finally {
      ca.close()
    }
  })
})
