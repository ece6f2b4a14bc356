/**
 * `kill -9` during a pull, a commit and a collection, on a real containerd with our daemon as
 * its snapshotter; then the daemon is started again on the same root. Nothing is lost (the image
 * pulled before, its pin, its snapshots and every byte of its files) and nothing is half-visible
 * (an image containerd lists has its whole snapshot chain, committed and readable, and its pin;
 * a snapshot is either the active one or the committed one, with all its files). The interrupted
 * work then runs to the end. Also the CLI (and `ctr`) killed mid-call: the daemon keeps serving.
 * On a node whose blocks come from a seed: the FUSE manager killed among a pull's lazy mounts (the
 * pull ends lazily, with warned fallbacks or a typed error; no stale mount; the pull again and a
 * container read right), a pull at once after a restart, and a reader of a lazy mount across a
 * daemon kill -9 and restart (right bytes or EIO, never wrong ones).
 *
 * One trial per fault in `npm test`; more in `npm run test:reliability` (RELIABILITY_CASES sets
 * them). The kill lands at a random point of the operation (its length measured first).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readFileSync, realpathSync, statSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, readdir, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CID } from 'multiformats/cid'
import { collectBlock, openRepo, walkDag } from '../../src/ipfs/index.js'
import { silentLogger } from '../../src/logging.js'
import { fuseMountsUnder, parseMountInfo } from '../../src/fs/mountinfo.js'
import { LABELS } from '../../src/wire/index.js'
import type * as api from '../../src/wire/index.js'
import { FuseManagerClient } from '../../src/fusemgr/index.js'
import { containerdNeeds, startContainerd, type PrivateContainerd } from '../../scripts/fixtures/containerd.js'
import { startDaemon, stopFuseManager, type RunningDaemon } from '../../scripts/fixtures/daemon.js'
import { chainIds, sha256 } from '../../scripts/fixtures/digest.js'
import { allBlobs, blob, jsonBlob, makeImage, tagged, writeLayout, type TestImage } from '../../scripts/fixtures/oci-image.js'
import { snapshotsClient, type SnapshotsClient } from '../../scripts/fixtures/snapshots-client.js'
import { fixtureBytes, makeTar } from '../../scripts/fixtures/tar.js'
import { MediaType } from '../../src/oci/index.js'
import { cliPath } from '../../scripts/fixtures/tools.js'
import { hasCommand, hasFuse, needs } from '../helpers/env.js'
import { cases, FULL, record } from './harness.js'
import { removeWorkDir } from '../../scripts/fixtures/work-dir.js'
import { runBytes, runCli, type RunResult } from '../../scripts/fixtures/run.js'

const TRIALS = cases(1, 5)
/** Processes reading one lazy mount at once while the daemon is killed and started again. */
const READERS = 4

async function cli (args: string[]): Promise<RunResult<string>> {
  return await runCli(args, { timeoutMs: 120_000 })
}

/** A process started now and killed with SIGKILL after `delayMs` (unless it ended first). */
async function killedAfter (child: ChildProcess, delayMs: number): Promise<{ finished: boolean }> {
  // listened for from the spawn: an operation may end before the kill lands
  const exited = new Promise<number | null>(resolve => child.once('exit', (code) => resolve(code)))
  const timer = setTimeout(() => { child.kill('SIGKILL') }, delayMs)
  const code = await exited
  clearTimeout(timer)
  return { finished: code === 0 }
}

const sha = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex')

/** What the files of a makeImage image read as, by path (sha256). */
function expectedFiles (img: TestImage, seed: string, layerSize: number): Map<string, string> {
  const m = new Map<string, string>()
  for (let i = 0; i < img.layers.length; i++) {
    m.set(`dir${i}/file.txt`, sha(`layer ${i} of amd64 ${seed}\n`.repeat(1 + i)))
    m.set(`dir${i}/big.bin`, sha(Buffer.alloc(layerSize, i + 1)))
  }
  return m
}

/** An image of many small files: a push (and a collection of it) with a thousand blocks. */
async function manyFilesImage (dir: string): Promise<void> {
  const entries: Parameters<typeof makeTar>[0] = [{ name: 'd/', type: 'dir' }]
  for (let i = 0; i < 500; i++) entries.push({ name: `d/f${i}`, data: fixtureBytes(7_000_000 + i, 200 + (i * 37) % 3000) })
  const tar = makeTar(entries)
  const layer = blob(MediaType.OciLayerGzip, gzipSync(tar, { level: 1 }))
  const config = jsonBlob(MediaType.OciConfig, { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha256(tar)] } })
  const manifest = jsonBlob(MediaType.OciManifest, { schemaVersion: 2, mediaType: MediaType.OciManifest, config: config.descriptor, layers: [layer.descriptor] })
  await writeLayout(dir, [layer, config, manifest], [tagged(manifest.descriptor, 'latest')])
}

/** Mounts what a View/Prepare answered at `at` (overlay or bind, as containerd would). */
function mountAt (m: api.Mount, at: string): void {
  const opts = m.options.filter(o => o !== 'rbind')
  const r = spawnSync('mount', [...(m.type === 'bind' ? ['--bind'] : ['-t', m.type]), ...(opts.length > 0 ? ['-o', opts.join(',')] : []), m.source, at], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`mount: ${r.stderr}`)
}

function umount (at: string): void {
  const r = spawnSync('umount', [at], { encoding: 'utf8' })
  if (r.status !== 0) spawnSync('umount', ['-l', at])
}

/** sha256 of what `cat` reads. */
async function catDigest (path: string): Promise<string> {
  const r = await runBytes('cat', [path])
  if (r.code !== 0) throw new Error(`cat ${path}: ${r.stderr}`)
  return sha(r.stdout)
}

describe.skipIf(needs({ ...containerdNeeds, fuse: hasFuse, fusermount: hasCommand('fusermount') }))('kill -9 during pull, commit and GC; then a restart loses nothing and shows nothing half-made', () => {
  let dir: string
  let root: string
  let address: string
  let d: RunningDaemon | undefined
  let ctrd: PrivateContainerd | undefined
  let sn: SnapshotsClient | undefined
  const LAYER = 300_000
  const seeds = ['kept', 'next']
  const imgs = seeds.map(seed => makeImage({ seed, layerCount: 3, layerSize: LAYER }))
  const roots: Record<string, string> = {}
  const chains: Record<string, string[]> = {}
  const files: Record<string, Map<string, string>> = {}
  let views = 0

  /** How long containerd took to reach a restarted daemon again, each time (ms). */
  const reconnects: number[] = []

  const start = async (): Promise<RunningDaemon> => {
    d = await startDaemon({ root, address, config: '[fs]\nbackground_fetch = false\n' })
    sn?.close()
    sn = snapshotsClient(address, 'default', { deadlineMs: 60_000 })
    if (ctrd != null) {
      // containerd's connection to its proxy snapshotter backs off after the crash (gRPC's
      // reconnect backoff): its calls fail Unavailable until it dials the new daemon
      const t0 = Date.now()
      for (;;) {
        try {
          await ctrd.ctr(['snapshots', '--snapshotter', 'ipfs-estargz', 'ls'])
          break
        } catch (err) {
          if (Date.now() - t0 > 120_000) throw err
          await new Promise(resolve => setTimeout(resolve, 200))
        }
      }
      reconnects.push(Date.now() - t0)
    }
    return d
  }

  /** The image out of containerd and unpinned here (its blocks stay until a collection). */
  const forget = async (seed: string): Promise<void> => {
    await (ctrd as PrivateContainerd).ctr(['images', 'rm', '--sync', `ipfs://${roots[seed]}`]).catch(() => '')
    await cli(['image', 'rm', roots[seed], '--repo', root])
    expect(await pinned()).not.toContain(roots[seed])
  }

  const pullArgs = (seed: string): string[] => ['pull', `ipfs://${roots[seed]}`, '--repo', root, '--address', (ctrd as PrivateContainerd).address, '--json']

  /** Reads every file of the snapshot chain ending at `top` through a View, compared with `want`. */
  const readView = async (top: string, want: Map<string, string>): Promise<void> => {
    const c = sn as SnapshotsClient
    const key = `check-view-${views++}`
    const at = join(dir, key)
    await mkdir(at)
    mountAt((await c.view(key, top))[0], at)
    try {
      for (const [path, digest] of want) expect(await catDigest(join(at, path)), path).toBe(digest)
    } finally {
      umount(at)
      await c.remove(key)
    }
  }

  const pinned = async (): Promise<string[]> => {
    const r = await cli(['pin', 'ls', '--repo', root])
    expect(r.code, r.stderr).toBe(0)
    return r.stdout.trim().split('\n').filter(Boolean).map(l => (JSON.parse(l) as { cid: string }).cid)
  }

  /**
   * The state after a crash and restart: `kept` whole (listed, pinned, chain committed and
   * readable); every other image of ours that containerd lists is whole too; nothing of ours
   * is mounted that no snapshot owns.
   */
  const checkWhole = async (): Promise<{ listed: string[] }> => {
    const c = ctrd as PrivateContainerd
    const listed = (await c.ctr(['images', 'ls', '-q'])).trim().split('\n').filter(Boolean)
    expect(listed).toContain(`ipfs://${roots.kept}`)
    const pins = await pinned()
    const infos = await (sn as SnapshotsClient).list()
    const byName = new Map(infos.map(i => [i.name, i]))
    // the FUSE manager holds a lazy mount for each remote snapshot and for nothing else (a mount
    // the killed daemon asked for but never committed was taken down at the restart)
    const remote = infos.filter(i => i.labels[LABELS.remote] != null).length
    const held = await new FuseManagerClient(join(root, 'fuse-manager.sock')).mounts()
    expect(held.length, `held: ${held.map(m => m.mountpoint).join(', ')}`).toBe(remote)
    for (const seed of seeds) {
      if (!listed.includes(`ipfs://${roots[seed]}`)) continue
      expect(pins, `image ${seed} is listed in containerd but not pinned`).toContain(roots[seed])
      for (const id of chains[seed]) expect(byName.get(id)?.kind, `snapshot ${id} of listed image ${seed}`).toBe('COMMITTED')
      await readView(chains[seed][chains[seed].length - 1], files[seed])
    }
    return { listed }
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'crash-'))
    root = join(dir, 'root')
    address = join(dir, 's.sock')
    for (let i = 0; i < seeds.length; i++) {
      const seed = seeds[i]
      await writeLayout(join(dir, `img-${seed}`), allBlobs(imgs[i]), [tagged(imgs[i].manifest.descriptor, 'latest')])
      const r = await cli(['push', `oci:${join(dir, `img-${seed}`)}`, '--repo', root, '--json', '--chunk-size', '65536'])
      if (r.code !== 0) throw new Error(r.stderr)
      const j = JSON.parse(r.stdout) as { root: string, images: Array<{ layers: Array<{ diffID: string }> }> }
      roots[seed] = j.root
      // the pushed layers' (eStargz) diffIDs, not the originals'
      chains[seed] = chainIds(j.images[0].layers.map(l => l.diffID))
      files[seed] = expectedFiles(imgs[i], seed, LAYER)
    }
    await manyFilesImage(join(dir, 'img-many'))
    await start()
    ctrd = await startContainerd({ proxyPlugins: { 'ipfs-estargz': address } })
    const first = await cli(pullArgs('kept'))
    expect(first.code, first.stderr).toBe(0)
  }, 300_000)

  afterAll(async () => {
    sn?.close()
    await ctrd?.stop()
    await d?.stop()
    if (root != null) await stopFuseManager(root)
    if (dir != null) await removeWorkDir(dir)
  })

  it(`the daemon killed during a pull (${TRIALS}×): the image pulled before is whole, the other whole or absent, and pulls again`, async () => {
    const c = ctrd as PrivateContainerd
    let injected = 0
    let survived = 0
    const midway: number[] = []
    // how long a pull of the image under test takes here: the kills land anywhere in it
    await forget('next')
    const t0 = Date.now()
    const timing = await cli(pullArgs('next'))
    expect(timing.code, timing.stderr).toBe(0)
    const pullMs = Date.now() - t0
    for (let t = 0; t < TRIALS; t++) {
      // a clean slate: not in containerd, its snapshots gone, unpinned
      await forget('next')
      // the CLI pulls through the daemon: the kill of the daemon lands in the pull's own work
      const child = spawn(process.execPath, [cliPath, ...pullArgs('next')], { stdio: 'ignore' })
      const delay = Math.floor(Math.random() * pullMs)
      const cliDone = new Promise(resolve => child.once('exit', resolve))
      await new Promise(resolve => setTimeout(resolve, delay))
      await (d as RunningDaemon).kill()
      await cliDone
      injected++
      await start()
      const { listed } = await checkWhole()
      if (!listed.includes(`ipfs://${roots.next}`)) midway.push(delay)
      const again = await cli(pullArgs('next'))
      expect(again.code, again.stderr).toBe(0)
      await checkWhole()
      expect((await c.ctr(['images', 'ls', '-q']))).toContain(`ipfs://${roots.next}`)
      survived++
    }
    record({ kind: 'fault', fault: 'daemon kill -9 during a pull through containerd, then restart', injected, survived, note: `${midway.length} left the image out (killed before it was listed); the image pulled before stayed whole every time` })
  }, 600_000)

  it('the daemon killed the moment containerd lists a pulled image: the image is pinned already', async () => {
    const c = ctrd as PrivateContainerd
    const name = `ipfs://${roots.next}`
    await forget('next')
    const child = spawn(process.execPath, [cliPath, ...pullArgs('next')], { stdio: 'ignore' })
    const cliDone = new Promise(resolve => child.once('exit', resolve))
    // as soon as containerd shows the image, the daemon dies: whatever the pull does after
    // making the image visible never happens
    const deadline = Date.now() + 60_000
    for (;;) {
      const seen = await c.client.images.get(name).then(() => true, () => false)
      if (seen) break
      if (Date.now() > deadline) throw new Error('the pull never listed the image')
    }
    await (d as RunningDaemon).kill()
    await cliDone
    await start()
    const { listed } = await checkWhole()
    expect(listed).toContain(name)
    record({ kind: 'fault', fault: 'daemon kill -9 the moment a pull lists its image in containerd, then restart', injected: 1, survived: 1, note: 'the image was pinned already' })
  }, 300_000)

  it(`the CLI killed during a pull (${TRIALS}×): the daemon keeps serving and the pull runs again`, async () => {
    let injected = 0
    let survived = 0
    for (let t = 0; t < TRIALS; t++) {
      await forget('next')
      const child = spawn(process.execPath, [cliPath, ...pullArgs('next')], { stdio: 'ignore' })
      await killedAfter(child, 200 + Math.floor(Math.random() * 800))
      injected++
      expect((d as RunningDaemon).proc.exitCode).toBe(null)
      await checkWhole()
      const again = await cli(pullArgs('next'))
      expect(again.code, again.stderr).toBe(0)
      await checkWhole()
      survived++
    }
    record({ kind: 'fault', fault: 'CLI kill -9 during a pull (the daemon pulls)', injected, survived })
  }, 600_000)

  /** An active snapshot over the kept image with `n` files written into it; returns its files. */
  const filledSnapshot = async (key: string, n: number): Promise<Map<string, string>> => {
    const c = sn as SnapshotsClient
    const at = join(dir, `fill-${key}`)
    await mkdir(at, { recursive: true })
    mountAt((await c.prepare(key, chains.kept[chains.kept.length - 1]))[0], at)
    const written = new Map<string, string>()
    try {
      await mkdir(join(at, 'work'))
      for (let i = 0; i < n; i++) {
        const body = `file ${i} of ${key}\n`
        await writeFile(join(at, 'work', `f${i}`), body)
        written.set(`work/f${i}`, sha(body))
      }
    } finally {
      umount(at)
    }
    for (const [path, digest] of files.kept) written.set(path, digest)
    return written
  }

  /** After a commit of `key` as `name` was cut short: exactly one of the two, with every file. */
  const checkCommit = async (name: string, key: string, want: Map<string, string>): Promise<'committed' | 'active'> => {
    const c = sn as SnapshotsClient
    const infos = new Map((await c.list()).map(i => [i.name, i]))
    const committed = infos.get(name)
    const active = infos.get(key)
    expect(committed == null || active == null, `both ${name} and ${key} exist`).toBe(true)
    expect(committed != null || active != null, `neither ${name} nor ${key} exists: the snapshot is lost`).toBe(true)
    if (committed != null) {
      expect(committed.kind).toBe('COMMITTED')
      const at = join(dir, `check-${name}`)
      await mkdir(at, { recursive: true })
      mountAt((await c.view(`${name}-view`, name))[0], at)
      try {
        expect((await readdir(join(at, 'work'))).length).toBe([...want.keys()].filter(p => p.startsWith('work/')).length)
        for (const [path, digest] of want) expect(sha(await readFile(join(at, path))), path).toBe(digest)
      } finally {
        umount(at)
        await c.remove(`${name}-view`)
      }
      return 'committed'
    }
    expect(active?.kind).toBe('ACTIVE')
    const at = join(dir, `check-${key}`)
    await mkdir(at, { recursive: true })
    mountAt((await c.mounts(key))[0], at)
    try {
      for (const [path, digest] of want) expect(sha(await readFile(join(at, path))), path).toBe(digest)
    } finally {
      umount(at)
    }
    // and the commit goes through now
    await c.commit(name, key)
    return 'active'
  }

  it(`the daemon killed during a commit (${TRIALS}×), and ctr killed during one: the snapshot is active or committed, whole`, async () => {
    const FILES = 3000
    // how long a commit of such a snapshot takes here (the walk of its upper dir)
    await filledSnapshot('timing', FILES)
    const t0 = Date.now()
    await (sn as SnapshotsClient).commit('timing-done', 'timing')
    const commitMs = Math.max(20, Date.now() - t0)
    const outcome = { committed: 0, active: 0 }
    let injected = 0
    let survived = 0
    for (let t = 0; t < TRIALS; t++) {
      const key = `work-${t}`
      const want = await filledSnapshot(key, FILES)
      // a separate client: its call is the one cut short
      const c2 = snapshotsClient(address)
      const call = c2.commit(`done-${t}`, key).then(() => 'ok', () => 'failed')
      // up to twice its length: the call reaches the daemon some time after it is made
      await new Promise(resolve => setTimeout(resolve, Math.floor(Math.random() * 2 * commitMs)))
      await (d as RunningDaemon).kill()
      await call
      c2.close()
      injected++
      await start()
      outcome[await checkCommit(`done-${t}`, key, want)]++
      await checkWhole()
      survived++
    }
    record({ kind: 'fault', fault: 'daemon kill -9 during a snapshot commit, then restart', injected, survived, note: `commit of ${FILES} files: ${commitMs} ms; found committed ${outcome.committed}×, still active ${outcome.active}×` })

    // ctr (containerd's client) killed during a commit through containerd
    const c = ctrd as PrivateContainerd
    const want = await filledSnapshot('ctr-work', FILES)
    const child = spawn('ctr', ['--address', c.address, 'snapshots', '--snapshotter', 'ipfs-estargz', 'commit', 'ctr-done', 'ctr-work'], { stdio: 'ignore' })
    await killedAfter(child, Math.floor(Math.random() * commitMs))
    // the daemon may still be committing: wait until the call is over (the active one is gone or the commit is refused for it)
    await new Promise(resolve => setTimeout(resolve, commitMs + 500))
    expect((d as RunningDaemon).proc.exitCode).toBe(null)
    await checkCommit('ctr-done', 'ctr-work', want)
    record({ kind: 'fault', fault: 'ctr kill -9 during a snapshot commit through containerd', injected: 1, survived: 1 })
  }, 600_000)

  /**
   * Offline (no daemon): every block of both images' DAGs is here, and every stored block
   * hashes to its CID (a cut collection leaves no torn block). Returns the DAGs' block count.
   */
  const walkPinned = async (): Promise<number> => {
    const repo = await openRepo({ logger: silentLogger() }, { repo: root })
    try {
      let n = 0
      for (const seed of seeds) {
        for await (const _ of walkDag(CID.parse(roots[seed]), async (cid) => await collectBlock(repo.node.localBlockstore.get(cid)))) n++
      }
      for await (const { cid, bytes } of repo.node.localBlockstore.getAll()) {
        expect(cid.multihash.code).toBe(0x12)
        expect(sha(await collectBlock(bytes)), `block ${cid.toString()} does not verify`).toBe(Buffer.from(cid.multihash.digest).toString('hex'))
      }
      return n
    } finally {
      await repo.close()
    }
  }

  /**
   * An image of a thousand blocks pushed and removed: work for a collection. With `measure`,
   * how long a dry run takes and how many blocks it would free.
   */
  let lastGcMs = 200
  const garbage = async (measure = true): Promise<{ gcMs: number, blocks: number }> => {
    const p = await cli(['push', `oci:${join(dir, 'img-many')}`, '--repo', root, '--json'])
    expect(p.code, p.stderr).toBe(0)
    expect((await cli(['image', 'rm', (JSON.parse(p.stdout) as { root: string }).root, '--repo', root])).code).toBe(0)
    if (!measure) return { gcMs: lastGcMs, blocks: 0 }
    const t0 = Date.now()
    const dry = await cli(['gc', '--dry-run', '--repo', root])
    expect(dry.code, dry.stderr).toBe(0)
    const r = JSON.parse(dry.stdout) as { durationMs: number, blocks: { freed: number } }
    // the CLI's own start and the mark (the dry run's whole call), then about as long again to sweep
    lastGcMs = Date.now() - t0 + Math.max(50, r.durationMs)
    return { gcMs: lastGcMs, blocks: r.blocks.freed }
  }

  /** Blocks a collection would free now. */
  const collectable = async (): Promise<number> => {
    const dry = await cli(['gc', '--dry-run', '--repo', root])
    expect(dry.code, dry.stderr).toBe(0)
    return (JSON.parse(dry.stdout) as { blocks: { freed: number } }).blocks.freed
  }

  it(`the daemon killed during a collection (${TRIALS}×), and (full run) the CLI killed during one, with and without a daemon: pins and mounted layers keep every block, every stored block verifies`, async () => {
    let injected = 0
    let survived = 0
    const pinsBefore = (await pinned()).sort()
    let midway = 0
    // (full run) whether a kill landed mid-sweep: some of the garbage gone, some left
    const cut = async (before: number): Promise<void> => {
      if (!FULL) return
      const left = await collectable()
      if (left > 0 && left < before) midway++
    }
    // the last trial (full run) kills the CLI instead, while the daemon collects
    const trials = FULL ? TRIALS + 1 : TRIALS
    for (let t = 0; t < trials; t++) {
      const { gcMs, blocks } = await garbage(FULL || t === 0)
      const child = spawn(process.execPath, [cliPath, 'gc', '--repo', root], { stdio: 'ignore' })
      const delay = Math.floor(Math.random() * gcMs)
      if (t < TRIALS) {
        const cliDone = new Promise(resolve => child.once('exit', resolve))
        await new Promise(resolve => setTimeout(resolve, delay))
        await (d as RunningDaemon).kill()
        await cliDone
        // offline, before the restart: what the crash left on disk
        expect(await walkPinned()).toBeGreaterThan(10)
        await start()
      } else {
        await killedAfter(child, delay)
        expect((d as RunningDaemon).proc.exitCode).toBe(null)
      }
      injected++
      await cut(blocks)
      expect((await pinned()).sort()).toEqual(pinsBefore)
      // a collection now runs to the end and frees what the cut one left
      const gc = await cli(['gc', '--repo', root])
      expect(gc.code, gc.stderr).toBe(0)
      await checkWhole()
      survived++
    }
    // (full run) the CLI collecting by itself (no daemon) killed midway: the process deleting blocks dies
    if (FULL) {
      await (d as RunningDaemon).stop({ keepManager: true })
      d = undefined
      const left = await garbage()
      await killedAfter(spawn(process.execPath, [cliPath, 'gc', '--repo', root], { stdio: 'ignore' }), Math.floor(Math.random() * left.gcMs))
      injected++
      await cut(left.blocks)
      expect(await walkPinned()).toBeGreaterThan(10)
      const gc = await cli(['gc', '--repo', root])
      expect(gc.code, gc.stderr).toBe(0)
      await start()
      expect((await pinned()).sort()).toEqual(pinsBefore)
      await checkWhole()
      survived++
    }
    record({ kind: 'fault', fault: 'daemon kill -9 during GC (and the CLI twice: the daemon collecting, and collecting itself), then restart', injected, survived, note: `${midway} cut mid-sweep (some of the garbage gone, some left)` })
    record({ kind: 'fault', fault: 'containerd reaching a restarted daemon again', injected: reconnects.length, survived: reconnects.length, note: `after ${Math.min(...reconnects)}–${Math.max(...reconnects)} ms (containerd's reconnect backoff; its snapshot calls fail Unavailable until then)` })
  }, 600_000)
})

/**
 * A small image a container can run: a userland of the host's dynamic loader, libc, sha256sum
 * and cat (the only programs the checks run), and `dataLayers` layers of files that are not
 * fetched until read.
 */
async function toolsImage (dir: string, dataLayers: number, filesPerLayer: number, fileSize: number): Promise<Map<string, string>> {
  const host = (p: string): Buffer => readFileSync(realpathSync(p))
  const userland = makeTar([
    { name: 'bin/', type: 'dir' },
    { name: 'lib/', type: 'dir' },
    { name: 'lib/x86_64-linux-gnu/', type: 'dir' },
    { name: 'lib64/', type: 'dir' },
    { name: 'data/', type: 'dir' },
    { name: 'lib64/ld-linux-x86-64.so.2', data: host('/lib64/ld-linux-x86-64.so.2'), mode: 0o755 },
    { name: 'lib/x86_64-linux-gnu/libc.so.6', data: host('/lib/x86_64-linux-gnu/libc.so.6'), mode: 0o755 },
    { name: 'bin/sha256sum', data: host('/usr/bin/sha256sum'), mode: 0o755 },
    { name: 'bin/cat', data: host('/usr/bin/cat'), mode: 0o755 }
  ])
  const want = new Map<string, string>()
  const tars = [userland]
  for (let l = 0; l < dataLayers; l++) {
    const entries: Parameters<typeof makeTar>[0] = [{ name: `data/l${l}/`, type: 'dir' }]
    for (let f = 0; f < filesPerLayer; f++) {
      const data = fixtureBytes(9_000_000 + l * 1000 + f, fileSize + f * 97)
      entries.push({ name: `data/l${l}/f${f}`, data })
      want.set(`data/l${l}/f${f}`, sha(data))
    }
    tars.push(makeTar(entries))
  }
  const layers = tars.map(t => blob(MediaType.OciLayerGzip, gzipSync(t, { level: 1 })))
  const config = jsonBlob(MediaType.OciConfig, { architecture: 'amd64', os: 'linux', config: { Env: ['PATH=/bin'] }, rootfs: { type: 'layers', diff_ids: tars.map(t => sha256(t)) } })
  const manifest = jsonBlob(MediaType.OciManifest, { schemaVersion: 2, mediaType: MediaType.OciManifest, config: config.descriptor, layers: layers.map(l => l.descriptor) })
  await writeLayout(dir, [...layers, config, manifest], [tagged(manifest.descriptor, 'latest')])
  return want
}

/** FUSE mounts under `dir` that no longer answer (their server is gone: ENOTCONN on stat). */
async function staleFuseMounts (dir: string): Promise<string[]> {
  const stale: string[] = []
  for (const m of await fuseMountsUnder(dir)) {
    try {
      statSync(m.mountpoint)
    } catch (err) {
      stale.push(`${m.mountpoint} (${(err as NodeJS.ErrnoException).code ?? ''})`)
    }
  }
  return stale
}

describe.skipIf(needs({ ...containerdNeeds, fuse: hasFuse, fusermount: hasCommand('fusermount'), x86_64: () => process.arch === 'x64' }))('kill -9 of the FUSE manager during a pull\'s mounts, and FUSE reads across a daemon restart, on a node whose blocks come from a seed', () => {
  let dir: string
  let seedRoot: string
  let root: string
  let peer: string
  let seedDaemon: RunningDaemon | undefined
  let d: RunningDaemon | undefined
  let ctrd: PrivateContainerd | undefined
  let image: string
  let want: Map<string, string>
  const CONFIG = '[fs]\nbackground_fetch = false\n[fuse_manager]\nhealth_check_interval_sec = 1\n'
  let views = 0

  const start = async (): Promise<void> => {
    d = await startDaemon({ root, peers: [peer], config: CONFIG })
  }
  const manager = (): FuseManagerClient => new FuseManagerClient(join(root, 'fuse-manager.sock'))
  const pullArgs = (): string[] => ['pull', `ipfs://${image}`, '--repo', root, '--address', (ctrd as PrivateContainerd).address, '--json']
  const pinned = async (): Promise<string[]> => {
    const r = await cli(['pin', 'ls', '--repo', root])
    expect(r.code, r.stderr).toBe(0)
    return r.stdout.trim().split('\n').filter(Boolean).map(l => (JSON.parse(l) as { cid: string }).cid)
  }

  /** The image out of containerd, unpinned, and its blocks collected here: the next pull fetches from the seed again. */
  const forget = async (): Promise<void> => {
    const c = ctrd as PrivateContainerd
    await c.ctr(['images', 'rm', '--sync', `ipfs://${image}`]).catch(() => '')
    await cli(['image', 'rm', image, '--repo', root])
    const gc = await cli(['gc', '--repo', root])
    expect(gc.code, gc.stderr).toBe(0)
  }

  /** Waits until a FUSE manager answers with another pid than `killed` and holds a mount for every remote snapshot. */
  const recovered = async (killed: number): Promise<void> => {
    const sn = snapshotsClient((d as RunningDaemon).address)
    try {
      const deadline = Date.now() + 90_000
      for (;;) {
        try {
          const h = await manager().health(AbortSignal.timeout(2_000))
          const remote = (await sn.list()).filter(i => i.labels[LABELS.remote] != null).length
          if (h.pid !== killed && (await manager().mounts()).length === remote) return
        } catch {}
        if (Date.now() > deadline) throw new Error(`the FUSE manager was not started again with its mounts:\n${(d as RunningDaemon).log().slice(-3000)}`)
        await new Promise(resolve => setTimeout(resolve, 250))
      }
    } finally {
      sn.close()
    }
  }

  /**
   * Nothing half-visible: an image containerd lists is pinned; no FUSE mount under the
   * snapshots is stale, and each is one the manager holds for a remote snapshot; no active
   * snapshot of an unpack is left over.
   */
  const checkState = async (): Promise<void> => {
    const c = ctrd as PrivateContainerd
    const listed = (await c.ctr(['images', 'ls', '-q'])).trim().split('\n').filter(Boolean)
    if (listed.includes(`ipfs://${image}`)) expect(await pinned(), 'the image is listed in containerd but not pinned').toContain(image)
    const snapshots = join(root, 'snapshotter')
    expect(await staleFuseMounts(snapshots), 'stale FUSE mounts').toEqual([])
    const held = new Set((await manager().mounts()).map(m => m.mountpoint))
    for (const m of await fuseMountsUnder(snapshots)) expect(held.has(m.mountpoint), `${m.mountpoint} is mounted but not held by the manager`).toBe(true)
    const sn = snapshotsClient((d as RunningDaemon).address)
    try {
      const infos = await sn.list()
      const remote = infos.filter(i => i.labels[LABELS.remote] != null)
      expect(held.size, 'mounts held vs remote snapshots').toBe(remote.length)
      const extracting = infos.filter(i => i.kind === 'ACTIVE' && /extract-/.test(i.name)).map(i => i.name)
      expect(extracting, 'active unpack snapshots left').toEqual([])
      // every remote snapshot can be stacked on (a View of it is handed out)
      for (const info of remote) {
        const key = `usable-${views++}`
        await sn.view(key, info.name)
        await sn.remove(key)
      }
    } finally {
      sn.close()
    }
  }

  /** Prepares that fell back to a normal snapshot, as the daemon's /metrics counts them. */
  const fallbacksCounted = async (): Promise<number> => {
    const url = /"http":"(http:\/\/[^"]+)"/.exec((d as RunningDaemon).log())?.[1]
    if (url == null) throw new Error('the daemon logged no monitoring listener')
    const text = await (await fetch(`${url}/metrics`)).text()
    let n = 0
    for (const m of text.matchAll(/^ipfs_estargz_snapshot_fallbacks_total\{[^}]*\} (\d+)$/gm)) n += Number(m[1])
    return n
  }

  /** The pull run by the CLI, with when (ms after its start) each layer's line came on stderr. */
  const pullWatched = (onMount?: (n: number) => void): { done: Promise<{ code: number | null, stdout: string, stderr: string, layerAt: number[], mountAt: number[] }> } => {
    const t0 = Date.now()
    // and when each lazy mount appears under the snapshots (mountinfo, polled)
    const mountAt: number[] = []
    const poll = setInterval(() => {
      const n = parseMountInfo(readFileSync('/proc/self/mountinfo', 'utf8')).filter(m => m.fstype.startsWith('fuse') && m.mountpoint.startsWith(join(root, 'snapshotter') + '/')).length
      while (mountAt.length < n) {
        mountAt.push(Date.now() - t0)
        onMount?.(mountAt.length)
      }
    }, 2)
    const child = spawn(process.execPath, [cliPath, ...pullArgs()], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    const layerAt: number[] = []
    child.stdout.on('data', (b: Buffer) => { stdout += b.toString() })
    child.stderr.on('data', (b: Buffer) => {
      for (const _ of b.toString().matchAll(/^layer \d+\//gm)) layerAt.push(Date.now() - t0)
      stderr += b.toString()
    })
    // listened for from the spawn: the pull may end before the kill lands
    const exited = new Promise<number | null>(resolve => child.once('exit', (code) => resolve(code)))
    return { done: exited.then(code => { clearInterval(poll); return { code, stdout, stderr, layerAt, mountAt } }) }
  }

  /** A container on the image hashes every file of the data layers: each must be right. */
  const runAndVerify = async (id: string): Promise<void> => {
    const c = ctrd as PrivateContainerd
    const paths = [...want.keys()]
    const out = await c.ctr(['run', '--rm', '--snapshotter', 'ipfs-estargz', `ipfs://${image}`, id, '/bin/sha256sum', ...paths.map(p => `/${p}`)], { timeoutMs: 120_000 })
    const got = new Map(out.trim().split('\n').map(l => { const [h, p] = l.split(/\s+/); return [p.slice(1), h] }))
    for (const p of paths) expect(got.get(p), p).toBe(want.get(p))
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'crash-fm-'))
    seedRoot = join(dir, 'seed')
    root = join(dir, 'node')
    want = await toolsImage(join(dir, 'img'), 3, 40, 40_000)
    const pushed = await cli(['push', `oci:${join(dir, 'img')}`, '--repo', seedRoot, '--json', '--chunk-size', '65536'])
    if (pushed.code !== 0) throw new Error(pushed.stderr)
    image = (JSON.parse(pushed.stdout) as { root: string }).root
    seedDaemon = await startDaemon({ root: seedRoot, listen: ['/ip4/127.0.0.1/tcp/0'] })
    peer = (JSON.parse((await cli(['id', '--repo', seedRoot])).stdout) as { addresses: string[] }).addresses[0]
    await start()
    ctrd = await startContainerd({ proxyPlugins: { 'ipfs-estargz': (d as RunningDaemon).address } })
  }, 300_000)

  afterAll(async () => {
    await ctrd?.stop()
    await d?.stop()
    await seedDaemon?.stop()
    if (dir != null) await removeWorkDir(dir)
  })

  it(`the FUSE manager killed during a pull's layer mounts (${TRIALS}×): the pull succeeds (lazily or by a warned fallback) or fails typed; a retry succeeds and a container reads the right bytes; no stale mount`, async () => {
    const c = ctrd as PrivateContainerd
    const outcomes = { lazy: 0, fellBack: 0, failed: 0 }
    const codes = new Set<string>()
    const failures: string[] = []
    let injected = 0
    let survived = 0
    // when the pull's lazy mounts come here: the kill lands after the j-th mount appears (j
    // random), up to one gap between mounts later, so before, during or after the next one
    await forget()
    const { code: timingCode, stderr: timingErr, mountAt } = await pullWatched().done
    expect(timingCode, timingErr).toBe(0)
    expect(mountAt.length).toBe(4)
    const gap = Math.max(20, (mountAt[mountAt.length - 1] - mountAt[0]) / (mountAt.length - 1))
    for (let t = 0; t < TRIALS; t++) {
      await forget()
      const killed = (await manager().health()).pid
      const countedBefore = await fallbacksCounted()
      // j = 0: before the first mount appears (the layers being opened ahead, the first mount)
      const j = Math.floor(Math.random() * (mountAt.length + 1))
      const dies = (): void => { try { process.kill(killed, 'SIGKILL') } catch {} }
      let kill = j === 0 ? setTimeout(dies, Math.floor(Math.random() * mountAt[0])) : undefined
      const pull = pullWatched((n) => {
        if (n === j) kill = setTimeout(dies, Math.floor(Math.random() * gap))
      })
      injected++
      const { code, stdout, stderr } = await pull.done
      // (a pull that ended first: the manager dies right after it)
      await new Promise(resolve => setTimeout(resolve, gap))
      clearTimeout(kill)
      dies()
      if (code === 0) {
        const result = JSON.parse(stdout) as { layers: Array<{ lazy: boolean, existed: boolean, fallbackReason?: string }> }
        const fell = result.layers.filter(l => !l.lazy && !l.existed)
        // a layer not mounted lazily says why, on stderr and in the result
        for (const l of fell) expect(l.fallbackReason, stderr).toBeTruthy()
        expect((stderr.match(/fell back to download \+ apply/g) ?? []).length, stderr).toBe(fell.length)
        // (a Prepare tried again while the manager was away counts too: it fell back, then failed)
        expect(await fallbacksCounted() - countedBefore, 'fallbacks counted in /metrics').toBeGreaterThanOrEqual(fell.length)
        if (fell.length > 0) outcomes.fellBack++
        else outcomes.lazy++
      } else {
        // a clear, typed error
        const m = /\((ERR_[A-Z0-9_]+)\)/.exec(stderr)
        expect(m, `the failed pull's error has no code:\n${stderr}`).not.toBeNull()
        codes.add((m as RegExpExecArray)[1])
        failures.push(stderr.trim().split('\n').slice(-1)[0])
        outcomes.failed++
      }
      await recovered(killed)
      await checkState()
      const again = await cli(pullArgs())
      expect(again.code, again.stderr).toBe(0)
      expect((await c.ctr(['images', 'ls', '-q']))).toContain(`ipfs://${image}`)
      await runAndVerify(`fm-kill-${t}`)
      await checkState()
      survived++
    }
    record({ kind: 'fault', fault: 'FUSE manager kill -9 during a pull\'s layer mounts (blocks from a seed), then a retry and a container run', injected, survived, note: `mounts ${Math.round(gap)} ms apart; lazy anyway ${outcomes.lazy}×, fell back (warned) ${outcomes.fellBack}×, failed typed ${outcomes.failed}×${codes.size > 0 ? ` (${[...codes].join(', ')})` : ''}` })
    if (failures.length > 0) console.log(`failed pulls:\n${failures.join('\n')}`)
  }, 600_000)

  it(`a pull right after a daemon restart (${TRIALS}×) waits for containerd to reach the snapshotter again, and succeeds`, async () => {
    const took: number[] = []
    for (let t = 0; t < TRIALS; t++) {
      await forget()
      await (d as RunningDaemon).kill()
      await start()
      // at once: containerd's connection to the snapshotter is still in its reconnect backoff
      // (without the pull's retry its first Prepare failed ERR_CONTAINERD_UNAVAILABLE)
      const t0 = Date.now()
      const r = await cli(pullArgs())
      expect(r.code, r.stderr).toBe(0)
      took.push(Date.now() - t0)
      await checkState()
    }
    record({ kind: 'fault', fault: 'pull at once after a daemon restart (containerd still reconnecting)', injected: TRIALS, survived: TRIALS, note: `each pull started as the daemon answered; they took ${Math.min(...took)}–${Math.max(...took)} ms` })
  }, 300_000)

  it(`FUSE reads by ${READERS} processes at once across a daemon kill -9 and restart (${TRIALS}×): every read completes right or fails EIO, never wrong bytes; afterwards every file reads right`, async () => {
    const paths = [...want.keys()].filter(p => p.startsWith('data/'))
    let injected = 0
    let survived = 0
    let bytesChecked = 0
    let wrong = 0
    let failed = 0
    let readAfterRestart = 0
    for (let t = 0; t < TRIALS; t++) {
      // the image pulled lazily again, its blocks only on the seed: every first read goes
      // through the FUSE manager to this daemon, which fetches from the seed
      await forget()
      const pulled = await cli(pullArgs())
      expect(pulled.code, pulled.stderr).toBe(0)
      const top = (JSON.parse(pulled.stdout) as { chainId: string }).chainId
      const sn = snapshotsClient((d as RunningDaemon).address)
      const key = `reader-${t}`
      const at = join(dir, key)
      await mkdir(at)
      mountAt((await sn.view(key, top))[0], at)
      sn.close()
      try {
        // READERS readers at once, file after file, each from its own place in the list (so
        // they wait on different files); the daemon dies after the k-th file read by them all
        const k = 1 + Math.floor(Math.random() * paths.length / 2)
        const outs = new Array<string>(READERS).fill('')
        let errs = ''
        let killing: Promise<void> | undefined
        const linesRead = (): number => outs.reduce((n, o) => n + o.split('\n').length - 1, 0)
        const readers = Array.from({ length: READERS }, (_, r) => {
          const from = Math.floor(r * paths.length / READERS)
          const order = [...paths.slice(from), ...paths.slice(0, from)]
          const reader = spawn('sh', ['-c', 'for f in "$@"; do sha256sum "$f" || echo "FAILED $f"; done', 'sh', ...order.map(p => join(at, p))], { stdio: ['ignore', 'pipe', 'pipe'] })
          reader.stderr.on('data', (b: Buffer) => { errs += b.toString() })
          reader.stdout.on('data', (b: Buffer) => {
            outs[r] += b.toString()
            if (killing == null && linesRead() >= k) killing = (d as RunningDaemon).kill()
          })
          return { reader, exited: new Promise<number | null>(resolve => reader.once('exit', (code) => resolve(code))) }
        })
        const deadline = Date.now() + 60_000
        while (killing == null && readers.some(r => r.reader.exitCode == null) && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 20))
        expect(killing, 'the readers ended before the kill').toBeDefined()
        await killing
        injected++
        await new Promise(resolve => setTimeout(resolve, 300))
        // the readers are stuck in reads the dead daemon had to serve, not done
        const readWhileDown = linesRead()
        expect(readWhileDown).toBeLessThan(READERS * paths.length)
        await start()
        await Promise.all(readers.map(async r => await r.exited))
        readAfterRestart += READERS * paths.length - readWhileDown
        for (const line of outs.join('').trim().split('\n')) {
          const failedRead = /^FAILED (.+)$/.exec(line)
          if (failedRead != null) { failed++; continue }
          const [hash, path] = line.split(/\s+/)
          const rel = path.slice(at.length + 1)
          const ok = hash === want.get(rel)
          if (!ok) wrong++
          bytesChecked += statSync(path).size
          expect(hash, `wrong bytes read from ${rel}`).toBe(want.get(rel))
        }
        // a failed read is an I/O error, never anything else
        for (const line of errs.trim().split('\n').filter(Boolean)) expect(line).toMatch(/Input\/output error|Transport endpoint|Software caused connection abort/)
        // afterwards, every file reads right (the ones read before from the page cache)
        for (const p of paths) expect(await catDigest(join(at, p)), p).toBe(want.get(p))
        survived++
      } finally {
        umount(at)
        const sn2 = snapshotsClient((d as RunningDaemon).address)
        await sn2.remove(key).catch(() => {})
        sn2.close()
      }
    }
    record({ kind: 'fault', fault: `daemon kill -9 and restart under ${READERS} processes reading a lazy mount at once (blocks from a seed)`, injected, survived, note: `${readAfterRestart} file reads still to do when the daemon died: ${failed} failed EIO, the rest waited and read right` })
    record({ kind: 'wrong-bytes', what: 'reads across a daemon kill -9 and restart', bytesChecked, wrong })
  }, 600_000)
})
