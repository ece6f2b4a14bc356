import { execFile } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { status } from '@grpc/grpc-js'
import pino from 'pino'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { silentLogger } from '../../src/logging.js'
import { mountsUnder, unmountUnder } from '../../src/fs/mountinfo.js'
import { Snapshotter } from '../../src/snapshotter/snapshotter.js'
import { SnapshotterServer } from '../../src/snapshotter/service.js'
import { isRoot, needs } from '../helpers/env.js'
import { codeOf, errorOf, snapshotsClient } from '../../scripts/fixtures/snapshots-client.js'
import { HoldingTmpfsMounter, LateTmpfsMounter, TmpfsMounter } from './fake-mounter.js'
import { spawnServer } from './spawn-server.js'
import type { SnapshotsClient } from '../../scripts/fixtures/snapshots-client.js'
import { LABELS, REMOTE_LABEL_VALUE, type Info, type Labels, type Mount } from '../../src/wire/index.js'
import type { SnapshotterOptions } from '../../src/snapshotter/snapshotter.js'

const run = promisify(execFile)

/** What containerd's unpacker sends when it prepares layer `n` of an image published to IPFS. */
const lazyLabels = (chainId: string, cid: string): Labels => ({
  [LABELS.snapshotRef]: chainId,
  [LABELS.remoteUrls]: `ipfs://${cid}`,
  [LABELS.tocDigest]: 'sha256:' + 'e'.repeat(64),
  'containerd.io/snapshot/cri.image-ref': 'localhost/img:latest'
})

/** Performs containerd's mounts at `target` (as `mount.All` would) and returns the unmount. */
async function mountAll (mounts: Mount[], target: string): Promise<() => Promise<void>> {
  mkdirSync(target, { recursive: true })
  const [m] = mounts
  if (m == null) throw new Error('no mounts')
  if (m.type === 'bind') {
    await run('mount', ['--bind', m.source, target])
    if (m.options.includes('ro')) await run('mount', ['-o', 'remount,bind,ro', target])
  } else {
    await run('mount', ['-t', m.type, m.source, '-o', m.options.join(','), target])
  }
  return async () => { await run('umount', [target]) }
}

const idFromMounts = (mounts: Mount[]): string => {
  const m = mounts[0]
  const p = m?.type === 'bind' ? m.source : (m?.options.find((o) => o.startsWith('upperdir=')) ?? '').slice('upperdir='.length)
  return p.split('/').at(-2) ?? ''
}

interface Harness {
  dir: string
  root: string
  socket: string
  mounter: TmpfsMounter
  logs: string[]
  server: SnapshotterServer
  snapshotter: Snapshotter
  client: SnapshotsClient
}

async function startHarness (dir: string, mounter: TmpfsMounter, options: Partial<SnapshotterOptions> = {}, digests: Record<string, string> = {}): Promise<Harness> {
  const root = join(dir, 'root')
  const socket = join(dir, 'sn.sock')
  const logs: string[] = []
  const logger = pino({ level: 'info' }, { write: (s: string) => { logs.push(s) } })
  const snapshotter = new Snapshotter({ logger, mounter, resolveDigest: (d) => digests[d] }, { root, ...options })
  const server = new SnapshotterServer({ snapshotter, logger }, { address: socket })
  await server.start()
  return { dir, root, socket, mounter, logs, server, snapshotter, client: snapshotsClient(socket, 'k8s.io') }
}

async function stopHarness (h: Harness | undefined): Promise<void> {
  h?.client.close()
  await h?.server.stop()
}

async function removeDir (dir: string): Promise<void> {
  await unmountUnder(dir)
  if ((await mountsUnder(dir)).length === 0) rmSync(dir, { recursive: true, force: true })
}

describe.skipIf(needs({ root: isRoot }))('remote snapshots (fake mounter)', () => {
  let dir: string
  let h: Harness | undefined

  beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'snapshotter-remote-')) })
  afterEach(async () => {
    await stopHarness(h)
    h = undefined
    await removeDir(join(dir, 'root'))
    rmSync(join(dir, 'mnt'), { recursive: true, force: true })
  })
  afterAll(async () => { await removeDir(dir) })

  it('answers AlreadyExists, commits under the ref with the remote label, and containerd\'s Walk finds it', async () => {
    h = await startHarness(dir, new TmpfsMounter())
    const { client, root } = h
    const err = await errorOf(client.prepare('default/1/extract-1 sha256:l1', '', lazyLabels('sha256:l1', 'bafylayer1')))
    expect(err.code).toBe(status.ALREADY_EXISTS)
    expect(err.details).toBe('target snapshot "sha256:l1": already exists')
    expect(await codeOf(client.stat('default/1/extract-1 sha256:l1'))).toBe(status.NOT_FOUND) // the active key is gone
    const found = await client.list(`labels."containerd.io/snapshot.ref"==sha256:l1,parent==${JSON.stringify('')}`)
    expect(found).toHaveLength(1)
    expect(found[0]).toMatchObject({
      name: 'sha256:l1',
      parent: '',
      kind: 'COMMITTED',
      labels: { ...lazyLabels('sha256:l1', 'bafylayer1'), [LABELS.remote]: REMOTE_LABEL_VALUE, [LABELS.cid]: 'bafylayer1' }
    })
    expect(h.snapshotter.metrics.prepared).toBe(1)
    expect(h.logs.some((l) => l.includes('"remote-snapshot-prepared":"true"'))).toBe(true)

    // second layer on top of the first, then a container rootfs over both: a real overlay mount
    expect(await codeOf(client.prepare('default/2/extract-2 sha256:l2', 'sha256:l1', lazyLabels('sha256:l2', 'bafylayer2')))).toBe(status.ALREADY_EXISTS)
    expect((await client.list('labels."containerd.io/snapshot.ref"==sha256:l2,parent=="sha256:l1"')).map((i) => i.name)).toEqual(['sha256:l2'])
    const mounts = await client.prepare('container-rootfs', 'sha256:l2')
    expect(mounts[0]?.type).toBe('overlay')
    const umount = await mountAll(mounts, join(dir, 'mnt'))
    try {
      // the nearest layer wins: lowerdir lists sha256:l2 first
      expect(readFileSync(join(dir, 'mnt', 'layer.txt'), 'utf8')).toBe('bafylayer2')
    } finally {
      await umount()
    }
    expect((await client.usage('sha256:l1')).size).toBe(4096) // reported by the mounter

    // removing a remote snapshot unmounts it
    await client.remove('container-rootfs')
    await client.remove('sha256:l2')
    const l2Mount = h.mounter.calls.find((c) => c.cid === 'bafylayer2')?.mountpoint ?? ''
    expect(h.mounter.calls.filter((c) => c.op === 'unmount').map((c) => c.mountpoint)).toEqual([l2Mount])
    expect(await mountsUnder(l2Mount)).toEqual([])
    expect(existsSync(l2Mount)).toBe(false)
    expect(readdirSync(join(root, 'snapshots'))).toHaveLength(1)
  })

  it('resolves CRI\'s layer-digest label through the digest index, and falls back when it cannot', async () => {
    h = await startHarness(dir, new TmpfsMounter(), {}, { 'sha256:known': 'bafyknown' })
    const cri = (ref: string, digest: string): Labels => ({ [LABELS.snapshotRef]: ref, [LABELS.criLayerDigest]: digest })
    expect(await codeOf(h.client.prepare('extract-a', '', cri('sha256:c1', 'sha256:known')))).toBe(status.ALREADY_EXISTS)
    expect((await h.client.stat('sha256:c1')).labels[LABELS.cid]).toBe('bafyknown')
    const mounts = await h.client.prepare('extract-b', '', cri('sha256:c2', 'sha256:unknown'))
    expect(mounts).toEqual([{ type: 'bind', source: expect.stringMatching(/fs$/), target: '', options: ['rw', 'rbind'] }])
    expect(await h.client.stat('extract-b')).toMatchObject({ kind: 'ACTIVE' })
    expect(h.snapshotter.metrics.fallbacks['no-remote-layer']).toBe(1)
  })

  it('mounts by the CID annotation a registry copy\'s layer descriptor passes on, without the digest index', async () => {
    h = await startHarness(dir, new TmpfsMounter(), {}, {})
    const labels: Labels = { [LABELS.snapshotRef]: 'sha256:a1', [LABELS.criLayerDigest]: 'sha256:notindexed', [LABELS.annotatedCid]: 'bafyannotated' }
    expect(await codeOf(h.client.prepare('extract-ann', '', labels))).toBe(status.ALREADY_EXISTS)
    expect((await h.client.stat('sha256:a1')).labels[LABELS.cid]).toBe('bafyannotated')
  })

  it('falls back to a normal active snapshot when the mounter fails, and says why', async () => {
    const mounter = new TmpfsMounter()
    mounter.failCids.add('bafybroken')
    h = await startHarness(dir, mounter)
    const mounts = await h.client.prepare('extract-x', '', lazyLabels('sha256:x', 'bafybroken'))
    expect(mounts[0]).toMatchObject({ type: 'bind', options: ['rw', 'rbind'] })
    const info = await h.client.stat('extract-x')
    expect(info.kind).toBe('ACTIVE')
    expect(info.labels[LABELS.remote]).toBeUndefined()
    expect(await codeOf(h.client.stat('sha256:x'))).toBe(status.NOT_FOUND)
    // containerd now unpacks into it and commits it as usual
    writeFileSync(join(mounts[0]?.source ?? '', 'pulled'), 'the slow way')
    await h.client.commit('sha256:x', 'extract-x', { [LABELS.snapshotRef]: 'sha256:x' })
    expect(h.snapshotter.metrics.fallbacks['mount-failed']).toBe(1)
    const line = h.logs.find((l) => l.includes('"remote-snapshot-prepared":"false"')) ?? ''
    expect(JSON.parse(line)).toMatchObject({ level: 40, reason: 'mount-failed', err: 'lazy mount of bafybroken failed: cannot fetch bafybroken', target: 'sha256:x' })
    expect(info.labels[LABELS.fallbackReason]).toBe('mount-failed: lazy mount of bafybroken failed: cannot fetch bafybroken')
  })

  it('a long failure message is cut to fit containerd\'s label limit', async () => {
    const mounter = new TmpfsMounter()
    const cid = 'bafy' + 'x'.repeat(3000)
    mounter.failCids.add(cid)
    h = await startHarness(dir, mounter)
    await h.client.prepare('extract-long', '', lazyLabels('sha256:long', cid))
    const label = (await h.client.stat('extract-long')).labels[LABELS.fallbackReason] ?? ''
    expect(label.startsWith(`mount-failed: lazy mount of ${cid.slice(0, 900)}`)).toBe(true)
    expect(label.endsWith('…')).toBe(true)
    expect(Buffer.byteLength(label)).toBeLessThanOrEqual('mount-failed: '.length + 1024)
  })

  it('a mount that times out and lands later: the fallback is cancelled in the mounter first, so its directory stays an ordinary writable one', async () => {
    const mounter = new LateTmpfsMounter()
    mounter.slowCids.add('bafyslow')
    h = await startHarness(dir, mounter, { remoteMountTimeoutMs: 200 })
    const started = Date.now()
    const mounts = await h.client.prepare('extract-slow', '', lazyLabels('sha256:slow', 'bafyslow'))
    // answered once the mounter confirmed the cancel, not when the late mount would have landed
    expect(Date.now() - started).toBeLessThan(mounter.delayMs + 500)
    expect(mounts[0]).toMatchObject({ type: 'bind', options: ['rw', 'rbind'] })
    const upper = mounts[0]?.source ?? ''
    const info = await h.client.stat('extract-slow')
    expect(info.labels[LABELS.fallbackReason]).toBe('mount-timeout: no lazy mount of bafyslow within 200 ms')
    expect(h.snapshotter.metrics.fallbacks['mount-timeout']).toBe(1)
    const line = JSON.parse(h.logs.find((l) => l.includes('"remote-snapshot-prepared":"false"')) ?? '{}') as Record<string, unknown>
    expect(line).toMatchObject({ level: 40, reason: 'mount-timeout', target: 'sha256:slow' })
    // wait longer than the late mount would take: nothing lands on the directory
    await new Promise(resolve => setTimeout(resolve, mounter.delayMs + 300))
    await mounter.settle()
    expect(mounter.landedLate).toEqual([])
    expect(await mountsUnder(upper)).toEqual([])
    writeFileSync(join(upper, 'pulled'), 'the slow way') // containerd applies the layer here
    await h.client.commit('sha256:slow', 'extract-slow', { [LABELS.snapshotRef]: 'sha256:slow' })
    expect((await h.client.stat('sha256:slow')).labels[LABELS.fallbackReason]).toBeUndefined()
  })

  it('a failed mount the mounter cannot confirm undone: the snapshot gets a new directory, the old one may take the late mount', async () => {
    const mounter = new LateTmpfsMounter()
    mounter.slowCids.add('bafystuck')
    mounter.confirm = false
    h = await startHarness(dir, mounter, { remoteMountTimeoutMs: 200 })
    const mounts = await h.client.prepare('extract-stuck', '', lazyLabels('sha256:stuck', 'bafystuck'))
    const tried = mounter.calls.find(c => c.op === 'mount')?.mountpoint ?? ''
    const upper = mounts[0]?.source ?? ''
    expect(upper).not.toBe(tried)
    expect((await h.client.stat('extract-stuck')).labels[LABELS.fallbackReason]).toMatch(/^mount-timeout: /)
    await new Promise(resolve => setTimeout(resolve, mounter.delayMs + 300))
    await mounter.settle()
    expect(await mountsUnder(upper)).toEqual([])
    writeFileSync(join(upper, 'pulled'), 'the slow way')
    await h.client.commit('sha256:stuck', 'extract-stuck', { [LABELS.snapshotRef]: 'sha256:stuck' })
  })

  it('commits a target once when two Prepares race for it', async () => {
    h = await startHarness(dir, new TmpfsMounter())
    const codes = await Promise.all(['k1', 'k2', 'k3'].map(async (k) => await codeOf(h?.client.prepare(k, '', lazyLabels('sha256:same', 'bafysame')) ?? Promise.resolve())))
    expect(codes).toEqual([status.ALREADY_EXISTS, status.ALREADY_EXISTS, status.ALREADY_EXISTS])
    expect((await h.client.list()).map((i) => i.name)).toEqual(['sha256:same'])
    expect(readdirSync(join(h.root, 'snapshots'))).toHaveLength(1)
    expect(h.mounter.mounted.size).toBe(1)
  })

  it('mounts remote snapshots again on restart before the socket accepts calls', async () => {
    const mounter = new TmpfsMounter()
    h = await startHarness(dir, mounter)
    await codeOf(h.client.prepare('e1', '', lazyLabels('sha256:r1', 'bafyr1')))
    await h.client.prepare('plain', '')
    await h.client.commit('plain-c', 'plain', { keep: 'me' })
    const before = await h.client.list()
    await stopHarness(h)
    h = undefined
    expect(mounter.mounted.size).toBe(0) // stop() unmounted it
    const socket = join(dir, 'sn.sock')
    const seenSocket: boolean[] = []
    const origMount = mounter.mount.bind(mounter)
    mounter.mount = async (mp, labels, layer) => { seenSocket.push(existsSync(socket)); return await origMount(mp, labels, layer) }
    h = await startHarness(dir, mounter)
    expect(seenSocket).toEqual([false])
    expect(await h.client.list()).toEqual(before)
    expect(h.snapshotter.metrics.remounted).toBe(1)
    const [m] = await h.client.view('look', 'sha256:r1')
    expect(readFileSync(join(m?.source ?? '', 'layer.txt'), 'utf8')).toBe('bafyr1')
  })

  it('fails start when a remote snapshot cannot be mounted again, unless allowed (then it is Unavailable)', async () => {
    const mounter = new TmpfsMounter()
    h = await startHarness(dir, mounter)
    await codeOf(h.client.prepare('e1', '', lazyLabels('sha256:gone', 'bafygone')))
    await stopHarness(h)
    h = undefined
    mounter.failCids.add('bafygone')
    const logger = silentLogger()
    const strict = new Snapshotter({ logger, mounter }, { root: join(dir, 'root') })
    await expect(strict.start()).rejects.toMatchObject({ code: 'ERR_REMOUNT_FAILED', message: expect.stringContaining('"sha256:gone"') })
    expect(strict.started).toBe(false)
    // without a mounter at all: the cause says so, with its own code
    const unequipped = new Snapshotter({ logger }, { root: join(dir, 'root') })
    await expect(unequipped.start()).rejects.toMatchObject({ code: 'ERR_REMOUNT_FAILED', cause: { code: 'ERR_NO_REMOTE_MOUNTER', message: 'no remote layer mounter configured' } })
    h = await startHarness(dir, mounter, { allowInvalidMountsOnRestart: true })
    expect(h.snapshotter.metrics.remountFailures).toBe(1)
    const err = await errorOf(h.client.prepare('on-top', 'sha256:gone'))
    expect(err.code).toBe(status.UNAVAILABLE)
    // nothing is left of the refused Prepare (containerd keeps nothing of it either), nor of a View
    expect(await codeOf(h.client.stat('on-top'))).toBe(status.NOT_FOUND)
    expect((await errorOf(h.client.view('look-on-top', 'sha256:gone'))).code).toBe(status.UNAVAILABLE)
    expect(await codeOf(h.client.stat('look-on-top'))).toBe(status.NOT_FOUND)
    expect(readdirSync(join(dir, 'root', 'snapshots'))).toHaveLength(1)
    await h.client.remove('sha256:gone')
    expect(await h.client.list()).toEqual([])
  })
})

describe.skipIf(needs({ root: isRoot }))('a mounter whose mounts outlive the snapshotter (the FUSE manager)', () => {
  let dir: string
  let h: Harness | undefined

  beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'snapshotter-held-')) })
  afterAll(async () => {
    await stopHarness(h)
    await removeDir(dir)
  })

  it('restart keeps the held mounts of remote snapshots untouched and unmounts held mounts nobody owns', async () => {
    const mounter = new HoldingTmpfsMounter()
    h = await startHarness(dir, mounter, { unmountOnStop: false })
    expect(await codeOf(h.client.prepare('extract-1', '', lazyLabels('sha256:h1', 'bafyheld1')))).toBe(status.ALREADY_EXISTS)
    expect(await codeOf(h.client.prepare('extract-2', 'sha256:h1', lazyLabels('sha256:h2', 'bafyheld2')))).toBe(status.ALREADY_EXISTS)
    const held = await mounter.held()
    expect(held).toHaveLength(2)
    // a marker inside each mount: a remount (fresh tmpfs) would lose it
    for (const mp of held) writeFileSync(join(mp, 'marker'), 'still the same mount')
    // a held mount no snapshot owns (its snapshot went away while the daemon was down)
    const orphan = join(h.root, 'snapshots', '999', 'fs')
    mkdirSync(orphan, { recursive: true })
    await mounter.mount(orphan, {}, { cid: 'bafyorphan', via: 'urls' })
    await stopHarness(h)
    h = undefined
    expect(await mountsUnder(join(dir, 'root'))).toHaveLength(3) // stop kept them (unmountOnStop: false)

    mounter.calls.length = 0
    h = await startHarness(dir, mounter, { unmountOnStop: false })
    for (const mp of held) expect(readFileSync(join(mp, 'marker'), 'utf8')).toBe('still the same mount')
    expect(mounter.calls).toContainEqual({ op: 'unmount', mountpoint: orphan })
    expect((await mountsUnder(join(dir, 'root'))).sort()).toEqual([...held].sort())
    expect(h.snapshotter.metrics.remounted).toBe(2)
    expect(h.logs.join('')).toMatch(/remote snapshot still mounted: kept/)
    // and the chain still stacks on them
    const umount = await mountAll(await h.client.view('v', 'sha256:h2'), join(dir, 'mnt'))
    try {
      expect(readFileSync(join(dir, 'mnt', 'layer.txt'), 'utf8')).toBe('bafyheld2')
    } finally {
      await umount()
    }
  })

  it('recoverRemote() mounts again what the mounter lost (a FUSE manager that died)', async () => {
    const mounter = (h as Harness).mounter
    const lost = [...mounter.mounted.keys()]
    for (const mp of lost) await mounter.unmount(mp) // the new manager holds nothing
    mounter.calls.length = 0
    await (h as Harness).snapshotter.recoverRemote()
    expect(mounter.calls.filter(c => c.op === 'mount').map(c => c.cid).sort()).toEqual(['bafyheld1', 'bafyheld2'])
    for (const mp of lost) expect(readFileSync(join(mp, 'layer.txt'), 'utf8')).toMatch(/^bafyheld/)
  })

  it('recoverRemote() beside a Prepare mounting a layer: the new mount is neither undone nor marked failed', async () => {
    // the Prepare's mount waits for `landing`; the recovery's look at what the mounter holds
    // answers what it held when asked, once `listed` opens
    let land!: () => void
    let list!: () => void
    let enter!: () => void
    const entered = new Promise<void>(resolve => { enter = resolve })
    const landing = new Promise<void>(resolve => { land = resolve })
    const listed = new Promise<void>(resolve => { list = resolve })
    class Gated extends HoldingTmpfsMounter {
      override async mount (mountpoint: string, labels: Labels, layer: Parameters<HoldingTmpfsMounter['mount']>[2]): Promise<Awaited<ReturnType<HoldingTmpfsMounter['mount']>>> {
        if (layer.cid === 'bafyrace') {
          enter()
          await landing
        }
        return await super.mount(mountpoint, labels, layer)
      }

      armed = false
      override async held (): Promise<string[]> {
        const now = await super.held()
        if (this.armed) await listed
        return now
      }
    }
    const mounter = new Gated()
    await stopHarness(h)
    h = await startHarness(mkdtempSync(join(dir, 'race-')), mounter, { unmountOnStop: false })
    const c = h.client
    const prepared = codeOf(c.prepare('extract-race', '', lazyLabels('sha256:race', 'bafyrace')))
    await entered
    mounter.armed = true
    const recovering = h.snapshotter.recoverRemote()
    await new Promise(resolve => setTimeout(resolve, 100))
    land()
    expect(await prepared).toBe(status.ALREADY_EXISTS)
    list()
    await recovering
    const umount = await mountAll(await c.view('race-view', 'sha256:race'), join(h.dir, 'mnt'))
    try {
      expect(readFileSync(join(h.dir, 'mnt', 'layer.txt'), 'utf8')).toBe('bafyrace')
    } finally {
      await umount()
    }
  })
})

describe.skipIf(needs({ root: isRoot }))('crash safety (kill -9)', () => {
  let dir: string
  let server: { kill: (sig: NodeJS.Signals) => Promise<void> } | undefined
  const clients: SnapshotsClient[] = []

  beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'snapshotter-kill9-')) })
  afterAll(async () => {
    for (const c of clients) c.close()
    await server?.kill('SIGKILL')
    await removeDir(dir)
  })

  it('keeps every snapshot, label and mount, and leaves nothing half-made', async () => {
    const root = join(dir, 'root')
    const socket = join(dir, 'sn.sock')
    server = await spawnServer(root, socket, ['--fake-mounter'])
    let client = snapshotsClient(socket, 'k8s.io')
    clients.push(client)

    // layer 1: a remote (lazy) layer; layers 2-3: normal layers with files; an active rootfs; a view
    expect(await codeOf(client.prepare('extract-1', '', lazyLabels('sha256:k1', 'bafykill1')))).toBe(status.ALREADY_EXISTS)
    let parent = 'sha256:k1'
    for (const n of [2, 3]) {
      const m = await client.prepare(`extract-${n}`, parent, { [LABELS.snapshotRef]: `sha256:k${n}` })
      const id = idFromMounts(m)
      writeFileSync(join(root, 'snapshots', id, 'fs', `file${n}`), `layer ${n}`)
      await client.commit(`sha256:k${n}`, `extract-${n}`, { [LABELS.snapshotRef]: `sha256:k${n}`, 'containerd.io/gc.root': `r${n}` })
      parent = `sha256:k${n}`
    }
    const rootfs = await client.prepare('rootfs', 'sha256:k3', { 'containerd.io/gc.ref.content': 'x' })
    writeFileSync(join(root, 'snapshots', idFromMounts(rootfs), 'fs', 'written-by-container'), 'rw data')
    await client.view('ro-view', 'sha256:k2')
    await client.update({ name: 'sha256:k2', labels: { extra: 'label' } }, ['labels.extra'])
    const before: Info[] = await client.list()
    expect(before).toHaveLength(5)

    await server.kill('SIGKILL')
    server = undefined
    client.close()
    // what a crash mid-Prepare leaves behind: a temp dir and a renamed dir whose row never committed
    mkdirSync(join(root, 'snapshots', 'new-123456', 'fs'), { recursive: true })
    mkdirSync(join(root, 'snapshots', '424242', 'fs'), { recursive: true })
    expect(existsSync(socket)).toBe(true) // stale socket of the killed process

    server = await spawnServer(root, socket, ['--fake-mounter'])
    client = snapshotsClient(socket, 'k8s.io')
    clients.push(client)
    expect(statSync(socket).mode & 0o777).toBe(0o660)
    expect(await client.list()).toEqual(before)
    const dirs = readdirSync(join(root, 'snapshots'))
    expect(dirs).not.toContain('new-123456')
    expect(dirs).not.toContain('424242')
    expect(dirs).toHaveLength(5)
    // the dead mount of the killed process was replaced by exactly one fresh mount of the remote layer
    expect(await mountsUnder(root)).toHaveLength(1)

    // the container's rootfs still works: remote layer (mounted again), normal layers, its own writes
    const umount = await mountAll(await client.mounts('rootfs'), join(dir, 'mnt'))
    try {
      expect(readFileSync(join(dir, 'mnt', 'layer.txt'), 'utf8')).toBe('bafykill1')
      expect(readFileSync(join(dir, 'mnt', 'file2'), 'utf8')).toBe('layer 2')
      expect(readFileSync(join(dir, 'mnt', 'file3'), 'utf8')).toBe('layer 3')
      expect(readFileSync(join(dir, 'mnt', 'written-by-container'), 'utf8')).toBe('rw data')
    } finally {
      await umount()
    }
    // and the snapshotter keeps working on the same state
    await client.commit('committed-rootfs', 'rootfs')
    expect((await client.stat('committed-rootfs')).parent).toBe('sha256:k3')
    await server.kill('SIGTERM')
    server = undefined
    expect(await mountsUnder(root)).toEqual([]) // a clean stop unmounts remote layers
  })
})
