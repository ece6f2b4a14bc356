import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { lstat, mkdir, mkdtemp, readFile, readdir, readlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { collectBlock, verifyBlock } from '../../src/ipfs/dag-reader.js'
import { createLocalBlockstore } from '../../src/ipfs/local-blockstore.js'
import { corruptBlocks } from '../../scripts/fixtures/repo-blocks.js'
import { NetnsLan, netnsNeeds } from '../../scripts/fixtures/netns.js'
import { allBlobs, makeImage, tagged, writeLayout } from '../../scripts/fixtures/oci-image.js'
import { cliPath } from '../../scripts/fixtures/tools.js'
import { hasCommand, hasFuse, needs } from '../helpers/env.js'
import { removeWorkDir } from '../../scripts/fixtures/work-dir.js'
import { runCli, type RunResult } from '../../scripts/fixtures/run.js'

/**
 * Cluster pulls between real processes in network namespaces joined by a bridge (addresses that
 * exist only there), all in one private swarm: an origin daemon publishes an image; two nodes
 * that know only the origin (or find it by the DHT, or by mDNS) mount it lazily and read every
 * file; the origin stops and a third node still reads everything, from the first two. A node
 * with another swarm key gets nothing; a peer serving corrupted blocks is caught.
 */

const PORT = 4001

async function cli (args: string[]): Promise<RunResult<string>> {
  return await runCli(args, { timeoutMs: 120_000 })
}

interface Proc { proc: ChildProcess, log: () => string, stop: () => Promise<number | null> }

/** Starts `ipfs-estargz <args>` in namespace i and waits for `ready` on its stderr. */
async function startIn (lan: NetnsLan, i: number, args: string[], ready: string): Promise<Proc> {
  const [cmd, ...argv] = lan.wrap(i, [process.execPath, cliPath, ...args])
  const proc = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'] })
  let log = ''
  proc.stderr?.on('data', (d: Buffer) => { log = (log + d.toString()).slice(-2_000_000) })
  const exited = new Promise<number | null>(resolve => proc.on('exit', resolve))
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`${args[0]} did not start in 90 s:\n${log.slice(-5000)}`)) }, 90_000)
    proc.stderr?.on('data', () => { if (log.includes(ready)) { clearTimeout(timer); resolve() } })
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`${args[0]} exited with ${String(code)}:\n${log.slice(-5000)}`)) })
  })
  return {
    proc,
    log: () => log,
    stop: async () => {
      if (proc.exitCode == null && proc.signalCode == null) proc.kill('SIGTERM')
      const t = setTimeout(() => proc.kill('SIGKILL'), 30_000)
      const code = await exited
      clearTimeout(t)
      return code
    }
  }
}

/** sha256 of every regular file, and the target of every symlink, under `dir`. */
async function tree (dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  const walk = async (d: string): Promise<void> => {
    for (const name of (await readdir(d)).sort()) {
      const p = join(d, name)
      const st = await lstat(p)
      if (st.isDirectory()) await walk(p)
      else if (st.isSymbolicLink()) out.set(relative(dir, p), `-> ${await readlink(p)}`)
      else if (st.isFile()) out.set(relative(dir, p), createHash('sha256').update(await readFile(p)).digest('hex'))
    }
  }
  await walk(dir)
  return out
}

/** The `mount: block statistics` line a mount logs when it stops (at info level). */
function mountStats (log: string): { fetched: Record<string, number>, exchange: Record<string, number>, peers: Record<string, { bytesReceived: number, bytesServed: number }> } {
  const line = log.split('\n').reverse().find(l => l.includes('mount: block statistics'))
  if (line == null) throw new Error(`no statistics in the mount's log:\n${log.slice(-3000)}`)
  return JSON.parse(line)
}

describe.skipIf(needs({ ...netnsNeeds, fuse: hasFuse, fusermount: hasCommand('fusermount'), tar: hasCommand('tar') }))('cluster pulls in network namespaces', () => {
  const lan = new NetnsLan('h14', 6)
  let dir: string
  let root: string
  let expected: Map<string, string>
  const running: Proc[] = []
  const ids = new Map<string, string>()

  const addr = (i: number, id: string): string => `/ip4/${lan.addr(i)}/tcp/${PORT}/p2p/${id}`
  const cfg = (i: number, ipfs: Record<string, unknown>): string => {
    const lines = [`listen = ["/ip4/${lan.addr(i)}/tcp/${PORT}"]`, `swarm_key_file = "${join(dir, 'swarm.key')}"`, 'mdns_interval_sec = 1']
    for (const [k, v] of Object.entries(ipfs)) lines.push(`${k} = ${JSON.stringify(v)}`)
    return `[ipfs]\n${lines.join('\n')}\n`
  }

  /** The origin: a daemon over the repo the image was pushed to, in namespace 0. */
  async function origin (ipfs: Record<string, unknown>): Promise<Proc & { id: string }> {
    const file = join(dir, `origin-${Date.now()}.toml`)
    await writeFile(file, `${cfg(0, ipfs)}[fuse_manager]\nenable = false\n[prefetch]\nenable = false\n`)
    const p = await startIn(lan, 0, ['daemon', '--root', join(dir, 'origin'), '--address', join(dir, 'origin', 's.sock'), '--config', file], 'snapshotter on')
    running.push(p)
    return { ...p, id: ids.get('origin') as string }
  }

  /** A node in namespace i mounting the image at <dir>/<name>/mnt from its own repo. */
  async function mountNode (i: number, name: string, ipfs: Record<string, unknown>, opts: { key?: string, openTimeout?: number } = {}): Promise<Proc & { mnt: string, repo: string }> {
    const base = join(dir, name)
    await mkdir(join(base, 'mnt'), { recursive: true })
    let config = cfg(i, ipfs)
    if (opts.key != null) config = config.replace(join(dir, 'swarm.key'), opts.key)
    await writeFile(join(base, 'config.toml'), config)
    const p = await startIn(lan, i, ['mount', root, join(base, 'mnt'), '--repo', join(base, 'repo'), '--config', join(base, 'config.toml'), '--log-level', 'info', '--open-timeout', String(opts.openTimeout ?? 60)], 'mounted at')
    running.push(p)
    return { ...p, mnt: join(base, 'mnt'), repo: join(base, 'repo') }
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'h14-cluster-'))
    await lan.up()
    await writeFile(join(dir, 'swarm.key'), (await cli(['swarm', 'key', 'generate'])).stdout, { mode: 0o600 })
    await writeFile(join(dir, 'other.key'), (await cli(['swarm', 'key', 'generate'])).stdout, { mode: 0o600 })
    // three layers of incompressible data (about 6 MB), each a few hundred eStargz chunks
    const image = makeImage({ layerCount: 3, layerSize: 2_000_000, noise: true })
    await writeLayout(join(dir, 'img'), allBlobs(image), [tagged(image.manifest.descriptor, 'latest')])
    const src = join(dir, 'src')
    await mkdir(src)
    for (const [i, l] of image.layers.entries()) {
      await writeFile(join(dir, `layer-${i}.tar`), l.tar)
      const r = spawnSync('tar', ['-xf', join(dir, `layer-${i}.tar`), '-C', src])
      if (r.status !== 0) throw new Error(r.stderr.toString())
    }
    expected = await tree(src)
    const pushed = await cli(['push', `oci:${join(dir, 'img')}`, '--repo', join(dir, 'origin'), '--json', '--chunk-size', '65536'])
    if (pushed.code !== 0) throw new Error(pushed.stderr)
    root = (JSON.parse(pushed.stdout) as { root: string }).root
    ids.set('origin', (JSON.parse((await cli(['id', '--repo', join(dir, 'origin')])).stdout) as { id: string }).id)
  }, 300_000)

  afterAll(async () => {
    for (const p of running.reverse()) await p.stop().catch(() => {})
    lan.down()
    if (dir != null) await removeWorkDir(dir)
  })

  it('static peers: two nodes that know only the origin read every file; with the origin gone a third reads everything from them; a liar is caught', async () => {
    const o = await origin({})
    const [n1, n2] = await Promise.all([
      // n1 keeps its blocks as files (blockstore-fs, which does not check a block it reads): once
      // they are corrupted on disk below, it serves them as they are, a liar; the default pack
      // store would check them and drop them instead
      mountNode(1, 's1', { peers: [addr(0, o.id)], blockstore: 'fs' }),
      mountNode(2, 's2', { peers: [addr(0, o.id)] })
    ])
    const [t1, t2] = await Promise.all([tree(n1.mnt), tree(n2.mnt)])
    expect(t1).toEqual(expected)
    expect(t2).toEqual(expected)
    expect(expected.size).toBeGreaterThanOrEqual(6)
    await o.stop()

    // the third node knows the first two only (the origin is gone)
    const n1id = peerIdOf(n1.log())
    const n2id = peerIdOf(n2.log())
    const n3 = await mountNode(3, 's3', { peers: [addr(1, n1id), addr(2, n2id)] })
    expect(await tree(n3.mnt)).toEqual(expected)
    const s3 = mountStats(await stopAndLog(n3))
    expect(s3.fetched.exchangeBytes + s3.fetched.bitswapBytes).toBeGreaterThan(0)
    expect(s3.fetched.gatewayBytes).toBe(0)
    // both served some of it (the choice of peer is spread per block)
    expect(s3.peers[n1id]?.bytesReceived).toBeGreaterThan(0)
    expect(s3.peers[n2id]?.bytesReceived).toBeGreaterThan(0)

    // a liar: n1's repo with every block corrupted, served by a daemon in namespace 1
    await n1.stop()
    const n1repoId = n1id
    const corrupted = await corruptBlocks(n1.repo)
    expect(corrupted).toBeGreaterThan(10)
    const liar = await startIn(lan, 1, ['daemon', '--root', n1.repo, '--address', join(n1.repo, 's.sock'), '--config', await daemonConfig(1, 's1l')], 'snapshotter on')
    running.push(liar)
    const n4 = await mountNode(4, 's4', { peers: [addr(1, n1repoId), addr(2, n2id)] })
    expect(await tree(n4.mnt)).toEqual(expected)
    const log4 = await stopAndLog(n4)
    const s4 = mountStats(log4)
    const lies = log4.split('\n').filter(l => l.includes('does not match its CID'))
    expect(lies.length).toBeGreaterThanOrEqual(1)
    expect(lies.every(l => l.includes(n1repoId))).toBe(true)
    expect(s4.exchange.badBlocks).toBe(1) // caught once, never asked again
    expect(s4.peers[n2id].bytesReceived).toBeGreaterThan(0)
    // nothing wrong was stored
    expect(await verifyRepo(n4.repo)).toBeGreaterThan(10)
    await liar.stop()
    await n2.stop()
  }, 600_000)

  it('the LAN DHT: nodes bootstrapped from the origin read every file; with the origin gone a third, bootstrapped from one of them, finds the other through the DHT', async () => {
    const o = await origin({ dht: true })
    const [n1, n2] = await Promise.all([
      mountNode(1, 'd1', { bootstrap: [addr(0, o.id)], dht: true }),
      mountNode(2, 'd2', { bootstrap: [addr(0, o.id)], dht: true })
    ])
    const [t1, t2] = await Promise.all([tree(n1.mnt), tree(n2.mnt)])
    expect(t1).toEqual(expected)
    expect(t2).toEqual(expected)
    await new Promise(resolve => setTimeout(resolve, 2000)) // the mounts' announcements
    await o.stop()
    const n1id = peerIdOf(n1.log())
    const n2id = peerIdOf(n2.log())
    const n3 = await mountNode(3, 'd3', { bootstrap: [addr(1, n1id)], dht: true })
    expect(await tree(n3.mnt)).toEqual(expected)
    const s3 = mountStats(await stopAndLog(n3)) as ReturnType<typeof mountStats> & { discovery: Record<string, number> }
    expect(s3.discovery.lookups).toBe(1)
    expect(s3.discovery.lookupMisses).toBe(0)
    expect(s3.peers[n1id]?.bytesReceived).toBeGreaterThan(0)
    expect(s3.peers[n2id]?.bytesReceived).toBeGreaterThan(0) // known only through the DHT
    await n1.stop()
    await n2.stop()
  }, 600_000)

  it('mDNS: nodes given no address find the origin and each other; with the origin gone a third reads everything from them; a node with another swarm key gets nothing', async () => {
    const o = await origin({ mdns: true })
    const [n1, n2] = await Promise.all([
      mountNode(1, 'm1', { mdns: true }),
      mountNode(2, 'm2', { mdns: true })
    ])
    const [t1, t2] = await Promise.all([tree(n1.mnt), tree(n2.mnt)])
    expect(t1).toEqual(expected)
    expect(t2).toEqual(expected)
    await o.stop()
    const n1id = peerIdOf(n1.log())
    const n2id = peerIdOf(n2.log())
    const n3 = await mountNode(3, 'm3', { mdns: true })
    expect(await tree(n3.mnt)).toEqual(expected)
    const s3 = mountStats(await stopAndLog(n3))
    expect(s3.peers[n1id]?.bytesReceived).toBeGreaterThan(0)
    expect(s3.peers[n2id]?.bytesReceived).toBeGreaterThan(0)

    // another key: mDNS finds the nodes, but no connection is made and the mount fails in time
    const t0 = Date.now()
    const failed = await mountNode(5, 'wrongkey', { mdns: true, peers: [addr(1, n1id), addr(2, n2id)] }, { key: join(dir, 'other.key'), openTimeout: 5 }).then(() => undefined, (err: Error) => err)
    expect(failed?.message).toContain('ERR_MOUNT_OPEN_TIMEOUT')
    expect(Date.now() - t0).toBeLessThan(30_000)
    expect(await verifyRepo(join(dir, 'wrongkey', 'repo'))).toBe(0)
    await n1.stop()
    await n2.stop()
  }, 600_000)

  async function stopAndLog (p: Proc): Promise<string> {
    await p.stop()
    return p.log()
  }

  async function daemonConfig (i: number, name: string): Promise<string> {
    const file = join(dir, `${name}.toml`)
    await writeFile(file, `${cfg(i, {})}[fuse_manager]\nenable = false\n[prefetch]\nenable = false\n`)
    return file
  }

  /** The peer id a node logged at start. */
  function peerIdOf (log: string): string {
    const m = /"peerId":"([^"]+)"/.exec(log)
    if (m == null) throw new Error('no peer id in the log')
    return m[1]
  }

  /** Every block stored in a repo hashes to its CID; returns how many. */
  async function verifyRepo (repo: string): Promise<number> {
    const bs = await createLocalBlockstore(repo)
    await bs.open()
    let n = 0
    try {
      for await (const { cid, bytes } of bs.getAll()) {
        verifyBlock(cid, await collectBlock(bytes))
        n++
      }
    } finally {
      await bs.close()
    }
    return n
  }
})
