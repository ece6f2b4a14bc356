import { mkdir, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BlobReader } from '../../src/daemon/blob-api.js'
import { ControlServer } from '../../src/daemon/control.js'
import { ManagedLayerMounter } from '../../src/fusemgr/managed-mounter.js'
import {
  ensureFuseManager, FuseManager, FuseManagerCancelledError, FuseManagerClient, FuseManagerError,
  FuseManagerUnavailableError, type MountSettings
} from '../../src/fusemgr/index.js'
import { silentLogger, type Logger } from '../../src/logging.js'
import { LABELS, REMOTE_LABEL_VALUE } from '../../src/wire/index.js'
import { Snapshotter } from '../../src/snapshotter/snapshotter.js'
import { mountsUnder, unmountUnder } from '../../src/fs/mountinfo.js'
import type { RangeSource } from '../../src/source/types.js'
import { fixtureBytes } from '../../scripts/fixtures/tar.js'
import { cliPath } from '../../scripts/fixtures/tools.js'
import { hasCommand, hasFuse, isRoot, needs } from '../helpers/env.js'
import { SMALL_CHUNK } from '../helpers/fixtures.js'
import { removeDir, tempDir } from '../fs/helpers.js'
import { cat, expectReads, failure, LayerStore, layerMounterSuite, mountAt, ref, sleep, type Layer } from '../fs/layer-mounter-suite.js'

/**
 * The daemon's mounter when the lazy mounts live in the FUSE manager: every call is a request to
 * a real manager (in this process, or its own process as the daemon starts it), which reads the
 * layers through the real blob API of a control server over an IpfsSource.
 */

const skip = needs({ root: isRoot, fuse: hasFuse, fusermount: hasCommand('fusermount') })

interface Stack {
  mounter: ManagedLayerMounter
  client: FuseManagerClient
  /** A new mounter on the same manager, as a restarted daemon makes. */
  another: (logger?: Logger) => ManagedLayerMounter
  stop: () => Promise<void>
}

const alive = (pid: number): boolean => { try { process.kill(pid, 0); return true } catch { return false } }

/** The daemon's side (control server with the blob API) and a FUSE manager attached to it. */
async function startStack (dir: string, openSource: (cid: string, signal?: AbortSignal) => Promise<RangeSource>, options: { settings: MountSettings, warmTimeoutMs?: number, process?: boolean, logger?: Logger }): Promise<Stack> {
  const logger = options.logger ?? silentLogger()
  await mkdir(dir, { recursive: true })
  const blobs = new BlobReader({ logger, openSource })
  const apiSocket = join(dir, 'api.sock')
  const api = new ControlServer({ logger, blobs, run: async () => 0 }, { address: apiSocket, repo: dir })
  await api.start()
  let client: FuseManagerClient
  let stopManager: () => Promise<void>
  if (options.process === true) {
    const started = await ensureFuseManager({
      socket: join(dir, 'fm.sock'),
      root: dir,
      logFile: join(dir, 'fuse-manager.log'),
      logLevel: 'warn',
      diskCacheBytes: 1 << 30,
      memoryCacheBytes: 16 << 20,
      command: [process.execPath, cliPath]
    }, logger)
    expect(started.started).toBe(true)
    client = started.client
    stopManager = async () => {
      await client.shutdown().catch(() => {})
      for (let t = 0; t < 10_000 && alive(started.pid); t += 100) await sleep(100)
    }
  } else {
    const manager = new FuseManager({ logger }, { socket: join(dir, 'fm.sock'), mountRoot: join(dir, 'mnt'), cacheDir: join(dir, 'cache'), idleExitMs: 3_600_000 })
    await manager.start()
    client = new FuseManagerClient(join(dir, 'fm.sock'))
    stopManager = async () => { await manager.stop() }
  }
  await client.attach({ blobSocket: apiSocket })
  const make = (l: Logger = logger): ManagedLayerMounter => new ManagedLayerMounter({ client: new FuseManagerClient(client.socket), logger: l }, { settings: options.settings, warmTimeoutMs: options.warmTimeoutMs ?? 5_000 })
  return {
    mounter: make(),
    client,
    another: make,
    stop: async () => {
      await stopManager()
      await api.stop()
      await blobs.close()
    }
  }
}

/** The code the manager gave a failed call, else the client's own. */
const managerCode = (err: unknown): string | undefined => err instanceof FuseManagerError ? err.remoteCode ?? err.code : (err as { code?: string }).code

for (const where of ['FUSE manager in this process', 'FUSE manager process'] as const) {
  layerMounterSuite(`ManagedLayerMounter (${where})`, async (env) => {
    const stack = await startStack(env.dir, env.openSource, { settings: env.settings, process: where === 'FUSE manager process' })
    return {
      mounter: stack.mounter,
      codeOf: managerCode,
      // the manager reads through the blob API: a block the daemon cannot find is a failed blob read
      notFoundCode: 'ERR_BLOB_READ',
      conflictCode: 'ERR_MOUNT_CONFLICT',
      // a restarted daemon mounts its remote snapshots again: the manager keeps what it holds
      sameLayerAgain: 'kept',
      cleanup: stack.stop
    }
  }, { skip })
}

describe.skipIf(skip)('ManagedLayerMounter over a real FUSE manager', () => {
  let dir: string
  let store: LayerStore
  let stack: Stack
  let main: Layer
  /** A layer only the snapshotter test mounts (its reads are fetched, not found in the chunk cache). */
  let fresh: Layer
  /** Layers whose mounts prefetch usr/big.bin: one per test that holds their reads back (the chunk cache is shared). */
  const slow: Layer[] = []
  const logs: Array<{ level: number, msg: string, err?: string, cid?: string }> = []
  const logger = pino({ level: 'debug' }, { write: (s: string) => { logs.push(JSON.parse(s)) } })
  const settings = { backgroundFetch: false, prefetchTimeoutMs: 20_000, fetchTimeoutMs: 10_000 }

  const mp = async (n: string): Promise<string> => {
    const p = join(dir, 'mnt', n)
    await mkdir(p, { recursive: true })
    return p
  }

  beforeAll(async () => {
    dir = await tempDir('managed-mounter')
    store = await LayerStore.create()
    main = await store.add({ 'etc/hello.txt': Buffer.from('hello from the manager\n'), 'usr/big.bin': fixtureBytes(61, 9 * SMALL_CHUNK + 5) })
    fresh = await store.add({ 'etc/hello.txt': Buffer.from('a layer for the snapshotter\n'), 'usr/big.bin': fixtureBytes(62, 3 * SMALL_CHUNK + 5) })
    for (const seed of [71, 72, 73, 74, 75]) slow.push(await store.add({ 'etc/hello.txt': Buffer.from(`slow ${seed}\n`), 'usr/big.bin': fixtureBytes(seed, 5 * SMALL_CHUNK + 7) }, ['usr/big.bin']))
    stack = await startStack(join(dir, 'stack'), store.openSource, { settings, warmTimeoutMs: 600, logger })
  }, 60_000)

  afterAll(async () => {
    store?.release()
    await stack?.stop()
    if (dir != null) {
      await unmountUnder(dir)
      await removeDir(dir)
    }
    await store?.close()
  }, 60_000)

  it('mounts through the manager with the TOC digest of the labels; usage is the manager\'s fetched bytes and grows with reads', async () => {
    const at = await mp('usage')
    const handle = await stack.mounter.mount(at, { [LABELS.tocDigest]: main.tocDigest }, ref(main, null))
    expect(await stack.client.mounts()).toEqual([{ mountpoint: at, cid: main.cid, tocDigest: main.tocDigest, bytesFetched: expect.any(Number), stats: expect.objectContaining({ fetchedBytes: expect.any(Object), fetchMs: expect.any(Object) }) }])
    const before = await handle.usage?.() as number
    expect((await cat(join(at, 'usr/big.bin'))).equals(main.files['usr/big.bin'])).toBe(true)
    const after = await handle.usage?.() as number
    expect(after).toBeGreaterThan(before)
    expect(after).toBe((await stack.client.mounts())[0].bytesFetched)
    expect(after).toBeLessThanOrEqual(main.size)
    expect(logs.find(l => l.msg === 'layer mounted lazily (FUSE manager)' && l.cid === main.cid)).toMatchObject({ level: 30 })
    await stack.mounter.unmount(at)
    expect(await handle.usage?.()).toBe(0) // nothing there any more
    expect(await mountAt(at)).toBeUndefined()
  })

  it('the configured settings reach the manager: a mount answers while its prefetch is held back, and check waits for it until prefetchTimeoutMs is over', async () => {
    const at = await mp('settings')
    const quick = new ManagedLayerMounter({ client: stack.client, logger }, { settings: { ...settings, prefetchTimeoutMs: 500 }, warmTimeoutMs: 600 })
    store.holdReads(slow[0], (o, n) => o + n <= slow[0].tocOffset, 4_000)
    try {
      await quick.mount(at, {}, ref(slow[0]))
      expect(await mountAt(at)).toMatchObject({ fstype: 'fuse' })
      // answered with the prioritized files still held back
      expect(store.hold.held).toBeGreaterThan(0)
      expect((await stack.client.mounts()).find(m => m.mountpoint === at)?.stats?.prefetch).toMatchObject({ prioritizedDone: false })
      const started = Date.now()
      await quick.check(at)
      const took = Date.now() - started
      expect(took).toBeGreaterThanOrEqual(400)
      expect(took).toBeLessThan(3_000)
      await quick.check(at) // a second wait warns no more
      expect(logs.filter(l => l.msg === 'prefetch did not finish in time; going on without it')).toHaveLength(1)
    } finally {
      store.release()
    }
    await quick.unmount(at)
  }, 20_000)

  it('with waitForPrefetchAtMount the mount itself waits for the prefetch (up to prefetchTimeoutMs); check then answers at once', async () => {
    const at = await mp('settings-wait')
    const waiting = new ManagedLayerMounter({ client: stack.client, logger }, { settings: { ...settings, prefetchTimeoutMs: 20_000, waitForPrefetchAtMount: true }, warmTimeoutMs: 600 })
    store.holdReads(slow[4], (o, n) => o + n <= slow[4].tocOffset, 700)
    try {
      const started = Date.now()
      await waiting.mount(at, {}, ref(slow[4]))
      expect(Date.now() - started).toBeGreaterThanOrEqual(600)
      expect(store.hold.held).toBeGreaterThan(0)
      expect((await stack.client.mounts()).find(m => m.mountpoint === at)?.stats?.prefetch).toMatchObject({ prioritizedDone: true })
    } finally {
      store.release()
    }
    const started = Date.now()
    await waiting.check(at)
    expect(Date.now() - started).toBeLessThan(500)
    await expectReads(at, slow[4])
    await waiting.unmount(at)
  }, 20_000)

  it('a restarted daemon\'s mounter finds the mount held and keeps it: held() lists it, mount of the same layer is the same FUSE mount, which reads on', async () => {
    const at = await mp('held')
    await stack.mounter.mount(at, {}, ref(main))
    const before = await mountAt(at)
    const restarted = stack.another(logger)
    expect(await restarted.held()).toEqual([at])
    const handle = await restarted.mount(at, {}, ref(main))
    expect(await mountAt(at)).toEqual(before) // same mount id: not mounted again
    expect(logs.filter(l => l.msg === 'layer still mounted in the FUSE manager')).toHaveLength(1)
    await restarted.check(at)
    await expectReads(at, main)
    expect(await handle.usage?.()).toBe((await stack.client.mounts()).find(m => m.mountpoint === at)?.bytesFetched)
    await restarted.unmount(at)
    expect(await restarted.held()).toEqual([])
  })

  it('warm opens every layer ahead: their mounts find the TOC ready (the manager counts the hits); a failed warm is only logged', async () => {
    const before = (await stack.client.health()).warm?.hits ?? 0
    const unknown = await store.addBytes(Buffer.from('not a layer'))
    logs.length = 0
    await stack.mounter.warm([
      { cid: slow[1].cid, tocDigest: slow[1].tocDigest },
      { cid: main.cid, tocDigest: main.tocDigest },
      { cid: main.cid, tocDigest: 'sha256:' + '0'.repeat(64) },
      { cid: unknown, tocDigest: main.tocDigest }
    ])
    const failed = logs.filter(l => l.msg === 'opening a layer ahead failed; its mount reads the TOC itself')
    expect(failed.map(l => [l.cid, l.err])).toEqual(expect.arrayContaining([
      [main.cid, expect.stringMatching(/TOC digest mismatch/)],
      [unknown, expect.stringMatching(/footer/i)]
    ]))
    expect(failed).toHaveLength(2)
    const ats = [await mp('warm1'), await mp('warm2')]
    await stack.mounter.mount(ats[0], {}, ref(slow[1]))
    await stack.mounter.mount(ats[1], {}, ref(main))
    expect((await stack.client.health()).warm?.hits).toBe(before + 2)
    await expectReads(ats[0], slow[1])
    for (const at of ats) await stack.mounter.unmount(at)
  })

  it('warm is bounded by warmTimeoutMs and by the caller\'s signal: a layer whose TOC is held back does not hold it', async () => {
    store.holdReads(slow[2], (o, n) => o + n > slow[2].tocOffset, 5_000)
    try {
      let started = Date.now()
      await stack.mounter.warm([{ cid: slow[2].cid, tocDigest: slow[2].tocDigest }])
      let took = Date.now() - started
      expect(store.hold.held).toBeGreaterThan(0)
      expect(took).toBeGreaterThanOrEqual(550) // warmTimeoutMs is 600 here
      expect(took).toBeLessThan(2_500)
      const ac = new AbortController()
      setTimeout(() => ac.abort(), 100)
      started = Date.now()
      await stack.mounter.warm([{ cid: slow[2].cid, tocDigest: slow[2].tocDigest }], ac.signal)
      took = Date.now() - started
      expect(took).toBeLessThan(550)
    } finally {
      store.release()
    }
  }, 20_000)

  it('errors carry their codes: a free mountpoint\'s check, a cancelled mount, a manager that is not there', async () => {
    const at = await mp('codes')
    const notMounted = await failure(stack.mounter.check(at))
    expect(notMounted).toBeInstanceOf(FuseManagerError)
    expect((notMounted as FuseManagerError).remoteCode).toBe('ERR_NOT_MOUNTED')
    const ac = new AbortController()
    ac.abort()
    const cancelled = await failure(stack.mounter.mount(at, {}, ref(main), ac.signal))
    expect(cancelled).toBeInstanceOf(FuseManagerCancelledError)
    expect(cancelled).toMatchObject({ code: 'ERR_FUSE_MANAGER_CANCELLED' })
    const gone = new ManagedLayerMounter({ client: new FuseManagerClient(join(dir, 'nobody.sock')), logger }, { settings, warmTimeoutMs: 600 })
    for (const call of [gone.mount(at, {}, ref(main)), gone.unmount(at), gone.check(at), gone.held()]) {
      const err = await failure(call)
      expect(err).toBeInstanceOf(FuseManagerUnavailableError)
      expect(err).toMatchObject({ code: 'ERR_FUSE_MANAGER_UNAVAILABLE', socket: join(dir, 'nobody.sock') })
    }
    await gone.warm([{ cid: main.cid, tocDigest: main.tocDigest }]) // only logged
    expect(await mountAt(at)).toBeUndefined()
  })

  it('as the snapshotter\'s mounter: a Prepare mounts and commits the layer; a bad TOC falls back with mount-failed and the manager\'s reason, a mount held back past the timeout with mount-timeout, neither leaving a mount; a restarted snapshotter keeps the held mount', async () => {
    const root = join(dir, 'snapshotter')
    const options = { root, remoteMountTimeoutMs: 1_000, unmountOnStop: false }
    const labels = (l: Layer, target: string, tocDigest = l.tocDigest): Record<string, string> => ({ [LABELS.snapshotRef]: target, [LABELS.remoteUrls]: `ipfs://${l.cid}`, [LABELS.tocDigest]: tocDigest })
    const sn = new Snapshotter({ logger, mounter: stack.another(logger) }, options)
    await sn.start()
    try {
      await expect(sn.prepare('default', 'extract-1', '', labels(fresh, 'sha256:t1'))).rejects.toMatchObject({ code: 'ERR_SNAPSHOT_EXISTS' })
      expect(sn.stat('default', 'sha256:t1').labels).toMatchObject({ [LABELS.remote]: REMOTE_LABEL_VALUE, [LABELS.cid]: fresh.cid })
      const [held] = await stack.client.mounts()
      expect(held).toMatchObject({ cid: fresh.cid, mountpoint: expect.stringMatching(new RegExp(`^${root}/snapshots/\\d+/fs$`)) })
      await expectReads(held.mountpoint, fresh)

      const bad = await sn.prepare('default', 'extract-2', '', labels(main, 'sha256:t2', 'sha256:' + '0'.repeat(64)))
      expect(bad[0]).toMatchObject({ type: 'bind', options: ['rw', 'rbind'] })
      expect(sn.stat('default', 'extract-2').labels[LABELS.fallbackReason]).toMatch(new RegExp(`^mount-failed: lazy mount of ${main.cid} failed: TOC digest mismatch`))
      expect(await mountsUnder(bad[0].source)).toEqual([])

      store.holdReads(slow[3], (o, n) => o + n > slow[3].tocOffset, 4_000) // its TOC
      let late
      try {
        const started = Date.now()
        late = await sn.prepare('default', 'extract-3', '', labels(slow[3], 'sha256:t3'))
        expect(Date.now() - started).toBeLessThan(3_000) // answered once the manager undid it, not when the held reads end
        expect(sn.stat('default', 'extract-3').labels[LABELS.fallbackReason]).toBe(`mount-timeout: no lazy mount of ${slow[3].cid} within 1000 ms`)
        expect(sn.metrics.fallbacks).toMatchObject({ 'mount-failed': 1, 'mount-timeout': 1 })
        await sleep(4_500) // past the held reads: a mount still going on would have landed
      } finally {
        store.release()
      }
      expect(await mountsUnder(late[0].source)).toEqual([])
      expect((await stack.client.mounts()).map(m => m.mountpoint)).toEqual([held.mountpoint])
      expect((await readdir(late[0].source))).toEqual([]) // an ordinary empty directory for containerd to unpack into
    } finally {
      await sn.stop()
    }

    // the daemon restarts: a new snapshotter and mounter, the same manager
    const [held] = await stack.client.mounts()
    const before = await mountAt(held.mountpoint)
    const again = new Snapshotter({ logger, mounter: stack.another(logger) }, options)
    await again.start()
    try {
      expect(await mountAt(held.mountpoint)).toEqual(before)
      expect(again.metrics.remounted).toBe(1)
      await expectReads(held.mountpoint, fresh)
      const fetched = (await stack.client.mounts())[0].bytesFetched
      expect(fetched).toBeGreaterThan(0)
      expect((await again.usage('default', 'sha256:t1')).size).toBe(fetched)
      await again.remove('default', 'sha256:t1')
      expect(await stack.client.mounts()).toEqual([])
      expect(await mountAt(held.mountpoint)).toBeUndefined()
    } finally {
      await again.stop()
    }
  }, 60_000)
})
