import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { lstat, mkdir, mkdtemp, readdir, readlink, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { createGunzip } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { cleanEntryName, readTarStream } from '../../src/estargz/index.js'
import { openOciLayout, resolveImages } from '../../src/oci/index.js'
import { debianImageNeeds, debianPythonImage, type DebianPythonImage } from '../../scripts/fixtures/debian-image.js'
import { pushedDebianRepo } from '../../scripts/fixtures/pushed-debian.js'
import { stopFuseManager } from '../../scripts/fixtures/daemon.js'
import { cliPath } from '../../scripts/fixtures/tools.js'
import { hasCommand, hasFuse, needs } from '../helpers/env.js'
import { blockKeys } from '../../scripts/fixtures/repo-blocks.js'
import { run, runCli as cli, type RunResult } from '../../scripts/fixtures/run.js'

/**
 * The round trip across an air gap, with the debootstrap + python3 image: pushed on node A (the
 * host), exported to a CAR; node B, in a network namespace with no route anywhere but to C,
 * imports it (through its daemon) and serves it; node C, in its own namespace connected only
 * to B, mounts the image lazily and every file reads back byte-identical to the source layers.
 */

/** A command in a network namespace only: the mount namespace stays ours, so C's mount is visible here. */
function inNs (ns: string, args: string[]): string[] {
  return [`--net=/run/netns/${ns}`, process.execPath, cliPath, ...args]
}

async function nsCli (ns: string, args: string[]): Promise<RunResult<string>> {
  return await run('nsenter', inNs(ns, args))
}

function ip (args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8' })
}

/** Regular files (sha256), symlinks (target) of the image's merged root, from the source layers. */
type Tree = Map<string, { kind: 'file', sha: string } | { kind: 'symlink', target: string }>

async function sourceTree (layout: string): Promise<Tree> {
  const reader = await openOciLayout(layout)
  const tree: Tree = new Map()
  try {
    const res = await resolveImages(reader)
    for (const layer of res.images[0].layers) {
      const added = new Set<string>()
      const gunzip = createGunzip()
      Readable.from(await reader.fetch(layer)).pipe(gunzip)
      for await (const e of readTarStream(gunzip)) {
        const name = cleanEntryName(e.header.name)
        const base = name.split('/').at(-1) as string
        const dir = name.includes('/') ? name.slice(0, name.lastIndexOf('/')) : ''
        const under = (p: string): boolean => dir === '' ? true : p.startsWith(`${dir}/`)
        if (base === '.wh..wh..opq') {
          for (const k of [...tree.keys()]) if (under(k) && !added.has(k)) tree.delete(k)
          continue
        }
        if (base.startsWith('.wh.')) {
          const gone = (dir === '' ? '' : `${dir}/`) + base.slice(4)
          for (const k of [...tree.keys()]) if (k === gone || k.startsWith(`${gone}/`)) tree.delete(k)
          continue
        }
        added.add(name)
        if (e.header.type === 'reg') {
          const h = createHash('sha256')
          for await (const c of e.data()) h.update(c)
          tree.set(name, { kind: 'file', sha: h.digest('hex') })
        } else if (e.header.type === 'hardlink') {
          const target = tree.get(cleanEntryName(e.header.linkName))
          if (target != null) tree.set(name, target)
        } else if (e.header.type === 'symlink') {
          tree.set(name, { kind: 'symlink', target: e.header.linkName })
        } else {
          tree.delete(name)
        }
      }
    }
  } finally {
    await reader.close()
  }
  return tree
}

/** Reads every file of a mount, 16 at a time: a lazy read is a round trip to a peer, and one at a time the walk is mostly waiting. */
async function mountedTree (root: string): Promise<Tree> {
  const tree: Tree = new Map()
  const files: string[] = []
  const walk = async (rel: string): Promise<void> => {
    for (const name of await readdir(join(root, rel))) {
      const r = rel === '' ? name : `${rel}/${name}`
      const st = await lstat(join(root, r))
      if (st.isDirectory()) await walk(r)
      else if (st.isSymbolicLink()) tree.set(r, { kind: 'symlink', target: await readlink(join(root, r)) })
      else if (st.isFile()) files.push(r)
    }
  }
  await walk('')
  let next = 0
  const reader = async (): Promise<void> => {
    while (next < files.length) {
      const r = files[next++]
      const h = createHash('sha256')
      for await (const c of createReadStream(join(root, r))) h.update(c as Buffer)
      tree.set(r, { kind: 'file', sha: h.digest('hex') })
    }
  }
  await Promise.all(Array.from({ length: 16 }, reader))
  return tree
}

async function sha256File (path: string): Promise<string> {
  const h = createHash('sha256')
  for await (const c of createReadStream(path)) h.update(c as Buffer)
  return h.digest('hex')
}

async function blockCount (repo: string): Promise<number> {
  return (await blockKeys(repo)).length
}

/** Resolves when `proc`'s stderr has printed `text`. */
async function waitFor (proc: ChildProcess, log: () => string, text: string, ms: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "${text}" in ${ms} ms:\n${log()}`)), ms)
    const check = (): void => { if (log().includes(text)) { clearTimeout(timer); resolve() } }
    proc.stderr?.on('data', check)
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`exited with ${String(code)}:\n${log()}`)) })
    check()
  })
}

function started (proc: ChildProcess): () => string {
  let log = ''
  proc.stderr?.on('data', (d: Buffer) => { log = (log + d.toString()).slice(-200_000) })
  return () => log
}

describe.skipIf(needs({ ...debianImageNeeds, fuse: hasFuse, ip: hasCommand('ip'), nsenter: hasCommand('nsenter') }))('air gap: export on A, import on B (no route to A), lazy mount on C (connected only to B)', () => {
  const tag = randomBytes(3).toString('hex')
  const nsB = `h15a-${tag}-b`
  const nsC = `h15a-${tag}-c`
  const subnet = `10.${150 + (randomBytes(1)[0] % 100)}.${randomBytes(1)[0]}`
  const addrB = `${subnet}.1`
  let dir: string
  let image: DebianPythonImage
  let root: string
  let daemon: ChildProcess | undefined
  let mount: ChildProcess | undefined
  let mnt: string

  beforeAll(async () => {
    image = await debianPythonImage()
    dir = await mkdtemp(join(tmpdir(), 'air-gap-'))
    ip(['netns', 'add', nsB])
    ip(['netns', 'add', nsC])
    ip(['link', 'add', `h15a${tag}b`, 'type', 'veth', 'peer', 'name', `h15a${tag}c`])
    ip(['link', 'set', `h15a${tag}b`, 'netns', nsB])
    ip(['link', 'set', `h15a${tag}c`, 'netns', nsC])
    for (const [ns, dev, addr] of [[nsB, `h15a${tag}b`, addrB], [nsC, `h15a${tag}c`, `${subnet}.2`]]) {
      ip(['-n', ns, 'addr', 'add', `${addr}/24`, 'dev', dev])
      ip(['-n', ns, 'link', 'set', dev, 'up'])
      ip(['-n', ns, 'link', 'set', 'lo', 'up'])
    }
  }, 900_000)

  afterAll(async () => {
    if (mount != null && mount.exitCode == null && mount.signalCode == null) {
      mount.kill('SIGTERM')
      await new Promise(resolve => { mount?.once('exit', resolve); setTimeout(resolve, 30_000) })
    }
    if (mnt != null) await cli(['umount', mnt, '--repo', join(dir, 'c')])
    if (daemon != null && daemon.exitCode == null && daemon.signalCode == null) {
      daemon.kill('SIGTERM')
      await new Promise(resolve => { daemon?.once('exit', resolve); setTimeout(resolve, 30_000) })
    }
    if (dir != null) await stopFuseManager(join(dir, 'b'))
    for (const ns of [nsB, nsC]) spawnSync('ip', ['netns', 'del', ns])
    spawnSync('ip', ['link', 'del', `h15a${tag}b`]) // still here if moving it into its namespace failed
    if (dir != null) {
      await new Promise(resolve => setTimeout(resolve, 1500))
      await rm(dir, { recursive: true, force: true })
    }
  }, 120_000)

  it('B and C reach nothing but each other', () => {
    for (const ns of [nsB, nsC]) {
      const routes = ip(['-n', ns, 'route', 'show']).trim().split('\n')
      expect(routes).toHaveLength(1)
      expect(routes[0]).toMatch(new RegExp(`^${subnet.replace(/\./g, '\\.')}\\.0/24 `))
      expect(spawnSync('ip', ['-n', ns, 'route', 'get', '1.1.1.1']).status).not.toBe(0)
    }
  })

  it('round trip: every file of the image reads back byte-identical on C, fetched lazily from B', async () => {
    // A: the image pushed (a copy of the repo it was pushed into once for this build), exported
    root = (await pushedDebianRepo(join(dir, 'a'))).root
    const car = join(dir, 'debian.car')
    const exp = await cli(['export', root, '-o', car, '--repo', join(dir, 'a')])
    expect(exp.code, exp.stderr).toBe(0)

    // B: a daemon in its namespace; the bundle imported through it
    const repoB = join(dir, 'b')
    daemon = spawn('nsenter', inNs(nsB, ['daemon', '--root', repoB, '--address', join(repoB, 's.sock'), '--listen', `/ip4/${addrB}/tcp/4011`, '--log-level', 'info']), { stdio: ['ignore', 'ignore', 'pipe'] })
    const daemonLog = started(daemon)
    await waitFor(daemon, daemonLog, 'ipfs-estargz daemon: snapshotter on', 60_000)
    const imp = await nsCli(nsB, ['import', car, '--repo', repoB])
    expect(imp.code, imp.stderr).toBe(0)
    expect(imp.stdout.trim()).toBe(root)
    expect((await nsCli(nsB, ['image', 'ls', '--repo', repoB])).stdout).toContain(root)
    // B holds every block as A did: exported again, the bundle is the same, byte for byte
    const again = await nsCli(nsB, ['export', root, '-o', join(dir, 'from-b.car'), '--repo', repoB])
    expect(again.code, again.stderr).toBe(0)
    expect(await sha256File(join(dir, 'from-b.car'))).toBe(await sha256File(car))
    const id = JSON.parse((await nsCli(nsB, ['id', '--repo', repoB])).stdout) as { id: string, addresses: string[] }
    const peer = id.addresses.find(a => a.startsWith(`/ip4/${addrB}/tcp/4011`)) ?? `/ip4/${addrB}/tcp/4011/p2p/${id.id}`

    // C: an empty repo, B its only peer; the image mounted lazily
    const repoC = join(dir, 'c')
    mnt = join(dir, 'mnt')
    await mkdir(mnt)
    mount = spawn('nsenter', inNs(nsC, ['mount', root, mnt, '--repo', repoC, '--peer', peer.includes('/p2p/') ? peer : `${peer}/p2p/${id.id}`, '--no-background-fetch']), { stdio: ['ignore', 'ignore', 'pipe'] })
    const mountLog = started(mount)
    await waitFor(mount, mountLog, 'mounted at', 120_000)
    const total = await blockCount(repoB)
    const atMount = await blockCount(repoC)
    expect(atMount).toBeLessThan(total / 10) // lazily: footers, TOCs, the prioritized files

    const want = await sourceTree(image.layout)
    const got = await mountedTree(mnt)
    const files = [...want].filter(([, v]) => v.kind === 'file').length
    expect(files).toBeGreaterThan(1000)
    const differ = [...want].filter(([k, v]) => JSON.stringify(got.get(k)) !== JSON.stringify(v)).map(([k]) => k)
    expect(differ.slice(0, 10)).toEqual([])
    expect([...got.keys()].filter(k => !want.has(k)).slice(0, 10)).toEqual([])
    expect(got.size).toBe(want.size)
  }, 900_000)
})
