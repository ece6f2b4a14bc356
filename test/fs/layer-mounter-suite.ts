/**
 * The shared layer mounter test suite (RemoteLayerMounter, src/fs/layer-mounter.ts): every
 * mounter the snapshotter can use runs it, on real FUSE mounts read with `cat`.
 *
 *   import { layerMounterSuite } from './layer-mounter-suite.js'
 *   layerMounterSuite('LayerMounter (in process)', async (env) => {
 *     const mounter = new LayerMounter({ logger, mounts, cache, openSource: env.openSource }, env.settings)
 *     return { mounter, notFoundCode: 'ERR_BLOCK_NOT_FOUND', conflictCode: 'ERR_FS_MOUNT', sameLayerAgain: 'ERR_FS_MOUNT', cleanup }
 *   })
 *
 * The suite builds its eStargz layers (64 KiB chunks) and imports them into a Helia node; the
 * mounter reads them through `env.openSource`, an IpfsSource over that node as the daemon's is
 * (offline: an unknown CID fails at once with BlockNotFoundError). The suite can hold chosen
 * reads of a layer back (a slow peer; the held read still ends when its signal aborts) to abort
 * a mount while it reads the TOC, or while it prefetches. `makeFixture(env)` runs once
 * (beforeAll); afterAll unmounts every mountpoint the suite used, then runs `cleanup`.
 *
 * It checks: a mounted layer reads byte for byte with `cat` and `usage` counts what was fetched;
 * the mount is FUSE, ro,nosuid,nodev in /proc/self/mountinfo; unmount removes it, and succeeds
 * on a free mountpoint; the TOC digest comes from the labels when the layer ref has none; a wrong
 * TOC digest, no TOC digest, a blob that is not eStargz and an unknown CID each fail with their
 * code and leave nothing mounted (the mountpoint then takes a good layer); another layer on an
 * occupied mountpoint is refused with a code and the first mount keeps serving; several layers
 * mount at once; an aborted signal mounts nothing; an abort while the TOC is read, or during the
 * prefetch, rejects promptly and, once `unmount` of the mountpoint has answered, nothing is or
 * will be mounted there.
 */
import { execFile } from 'node:child_process'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildEstargzFile, EstargzReader } from '../../src/estargz/index.js'
import { importBytes } from '../../src/ipfs/import.js'
import type { IpfsNode } from '../../src/ipfs/node.js'
import { unmountUnder } from '../../src/fs/mountinfo.js'
import type { RemoteLayerMounter, RemoteLayerRef } from '../../src/fs/layer-mounter.js'
import { LABELS } from '../../src/wire/index.js'
import { IpfsSource } from '../../src/source/ipfs.js'
import type { RangeSource } from '../../src/source/types.js'
import { fixtureBytes, makeTar, type FixtureEntry } from '../../scripts/fixtures/tar.js'
import { SMALL_CHUNK } from '../helpers/fixtures.js'
import { MemStore, TempRepos } from '../ipfs/helpers.js'
import { removeDir, tempDir } from './helpers.js'

const run = promisify(execFile)

export interface LayerMounterEnv {
  /** A directory of the fixture's own (cache, sockets); removed after `cleanup`. */
  dir: string
  /** Opens a layer blob by CID, as the daemon's `openSource` does. */
  openSource: (cid: string, signal?: AbortSignal) => Promise<RangeSource>
  /**
   * Layer options for the mounter: no background fetch (the suite holds reads back and would
   * have them race), a prefetch timeout longer than any read the suite holds back, and mounts
   * that wait for their prefetch (the suite aborts mounts during it).
   */
  settings: { backgroundFetch: boolean, prefetchTimeoutMs: number, fetchTimeoutMs: number, waitForPrefetchAtMount: boolean }
}

export interface LayerMounterFixture {
  mounter: RemoteLayerMounter
  /**
   * The stable code of a failed mount (default: its `code`). A mounter that relays the failure
   * of another process gives the code it had there.
   */
  codeOf?: (err: unknown) => string | undefined
  /** Code of a mount of a CID the store does not have. */
  notFoundCode: string
  /** Code of a mount of another layer on a mountpoint the mounter holds. */
  conflictCode: string
  /** The same layer mounted again on its mountpoint: `'kept'` (resolves, the mount is the same) or the code it is refused with. */
  sameLayerAgain: 'kept' | string
  cleanup: () => Promise<void>
}

export interface LayerMounterSuiteOptions {
  /**
   * Tests (by key) this implementation is known to fail, because of a bug in src/ that is
   * reported and not fixed yet: they run as `it.fails`, so the fix shows up as a failure here.
   */
  knownFailures?: Partial<Record<keyof typeof SUITE_TESTS, string>>
  /** `needs(...)` of the implementation's prerequisites (root, /dev/fuse, fusermount). */
  skip?: boolean
}

export const SUITE_TESTS = {
  mount: 'mounts a layer: cat reads every file byte for byte, usage counts the fetched bytes, check passes',
  options: 'the mount is FUSE, ro,nosuid,nodev in /proc/self/mountinfo',
  unmount: 'unmount removes the mount (check then fails); unmount of a free mountpoint succeeds',
  labelsToc: 'the TOC digest comes from the labels when the layer ref has none',
  tocHint: 'a TOC hint in the labels: the TOC comes from its own block, no footer read of the layer; a hint that does not hold: the footer is read, the mount is right',
  badToc: 'a wrong TOC digest fails with ERR_TOC_DIGEST_MISMATCH and leaves nothing mounted; the mountpoint then takes the layer',
  noToc: 'no TOC digest anywhere fails with ERR_FS_TOC_DIGEST_REQUIRED and leaves nothing mounted',
  badLayer: 'a blob that is not eStargz fails with ERR_BAD_FOOTER and leaves nothing mounted',
  notFound: 'an unknown CID fails with the typed not-found error and leaves nothing mounted',
  occupied: 'another layer on an occupied mountpoint is refused with a code, the first mount keeps serving; the same layer again is kept or refused',
  parallel: 'several layers mount at once, each reads its own bytes',
  abortBefore: 'an aborted signal rejects and mounts nothing',
  abortToc: 'an abort while the footer and TOC are read rejects promptly; after unmount nothing is, or will be, mounted there',
  abortPrefetch: 'an abort during the prefetch rejects promptly; after unmount nothing is, or will be, mounted there'
} as const

export interface Layer { cid: string, size: number, tocDigest: string, tocOffset: number, files: Record<string, Buffer> }

/** What a mount of `path` looks like in /proc/self/mountinfo (the last mount there), or undefined. */
export async function mountAt (path: string): Promise<{ id: string, options: string[], fstype: string, source: string } | undefined> {
  const mp = resolve(path)
  let found
  for (const line of (await readFile('/proc/self/mountinfo', 'utf8')).split('\n')) {
    const f = line.split(' ')
    const dash = f.indexOf('-', 6)
    if (dash < 0) continue
    const at = f[4].replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)))
    if (at === mp) found = { id: f[0], options: f[5].split(','), fstype: f[dash + 1], source: f[dash + 2] }
  }
  return found
}

/** `cat` of a file on a mount, in a child process (this process may be the FUSE server: never read it synchronously). */
export async function cat (path: string): Promise<Buffer> {
  return (await run('cat', [path], { encoding: 'buffer', maxBuffer: 1 << 26 })).stdout
}

export const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

/**
 * eStargz layers in a Helia node, opened by CID as the daemon opens them (an IpfsSource; offline,
 * so an unknown CID fails at once with BlockNotFoundError). `hold` holds chosen reads of one
 * layer back (a slow peer): those `when` picks wait `ms`, or until their signal aborts.
 */
export class LayerStore {
  /** Every read of a layer, in order. */
  readonly reads: Array<{ cid: string, offset: number, length: number }> = []
  readonly hold: { cid?: string, ms: number, when: (offset: number, length: number) => boolean, held: number } = { ms: 0, when: () => false, held: 0 }
  private n = 0

  private constructor (readonly dir: string, private readonly repos: TempRepos, private readonly node: IpfsNode) {}

  static async create (): Promise<LayerStore> {
    const repos = new TempRepos()
    return new LayerStore(await tempDir('layer-store'), repos, await repos.node())
  }

  /** Builds a layer of `files` (64 KiB chunks; `prioritized` files are prefetched at mount, before the TOC in the blob). */
  async add (files: Record<string, Buffer>, prioritized?: string[]): Promise<Layer> {
    const name = `layer${this.n++}`
    const entries: FixtureEntry[] = Object.entries(files).map(([n, data]) => ({ name: n, data }))
    await writeFile(join(this.dir, `${name}.tar`), makeTar(entries))
    const out = join(this.dir, `${name}.esgz`)
    const { tocDigest } = await buildEstargzFile(join(this.dir, `${name}.tar`), out, { chunkSize: SMALL_CHUNK, ...(prioritized != null ? { prioritizedFiles: prioritized } : {}) })
    const bytes = await readFile(out)
    const { tocOffset } = await EstargzReader.open(async (o, l) => bytes.subarray(o, o + l), bytes.length)
    return { cid: await this.addBytes(bytes), size: bytes.length, tocDigest, tocOffset, files }
  }

  /** Stores any bytes; returns their CID. */
  async addBytes (bytes: Uint8Array): Promise<string> {
    return (await importBytes(this.node.helia.blockstore, bytes)).cid.toString()
  }

  /** The daemon's `openSource`. */
  readonly openSource = async (cid: string, signal?: AbortSignal): Promise<RangeSource> => {
    const inner = await IpfsSource.open(this.node.blocks, cid, { offline: true, signal })
    const hold = this.hold
    return {
      size: async () => await inner.size(),
      read: async (offset, length, s, hint) => {
        this.reads.push({ cid, offset, length })
        if (hold.cid === cid && hold.when(offset, length)) {
          hold.held++
          await new Promise<void>((resolve, reject) => {
            const timer = setTimeout(resolve, hold.ms)
            s?.addEventListener('abort', () => { clearTimeout(timer); reject(s.reason) }, { once: true })
          })
        }
        return await inner.read(offset, length, s, hint)
      },
      close: async () => { await inner.close() }
    }
  }

  /** Holds the reads of `l` that `when` picks back for `ms` from now on (until `release`). */
  holdReads (l: Layer, when: (offset: number, length: number) => boolean, ms: number): void {
    Object.assign(this.hold, { cid: l.cid, ms, when, held: 0 })
  }

  release (): void {
    this.hold.cid = undefined
  }

  async close (): Promise<void> {
    this.release()
    await this.repos.cleanup()
    await removeDir(this.dir)
  }
}

/** The layer as the snapshotter resolves it; `tocDigest` null: the ref carries none. */
export const ref = (l: Layer, tocDigest: string | null = l.tocDigest): RemoteLayerRef => ({ cid: l.cid, ...(tocDigest != null ? { tocDigest } : {}), via: 'urls' })

/** The error `p` rejects with; throws when it resolves. */
export async function failure (p: Promise<unknown>): Promise<unknown> {
  return await p.then(() => { throw new Error('the mount succeeded') }, (e: unknown) => e)
}

/** Every file of `l` reads byte for byte with `cat` under `at`. */
export async function expectReads (at: string, l: Layer): Promise<void> {
  for (const [n, data] of Object.entries(l.files)) expect((await cat(join(at, n))).equals(data), n).toBe(true)
}

export function layerMounterSuite (name: string, makeFixture: (env: LayerMounterEnv) => Promise<LayerMounterFixture>, options: LayerMounterSuiteOptions = {}): void {
  describe.skipIf(options.skip === true)(`layer mounter suite: ${name}`, () => {
    const used = new Set<string>()
    let dir: string
    let store: LayerStore
    let fixture: LayerMounterFixture | undefined
    let main: Layer
    let other: Layer
    let notEstargz: string
    /** Layers whose mount prefetches usr/big.bin (before the TOC in the blob): one per abort test, so no cache hides its reads. */
    const slow: Layer[] = []

    const fx = (): LayerMounterFixture => {
      if (fixture == null) throw new Error('makeFixture failed')
      return fixture
    }
    const mounter = (): RemoteLayerMounter => fx().mounter
    const codeOf = (err: unknown): string | undefined => fx().codeOf?.(err) ?? (err as { code?: string }).code
    const mp = async (n: string): Promise<string> => {
      const p = join(dir, 'mnt', n)
      await mkdir(p, { recursive: true })
      used.add(p)
      return p
    }
    /** Nothing is mounted at `at`: not in mountinfo, not in the mounter's view. */
    const expectFree = async (at: string): Promise<void> => {
      expect(await mountAt(at), `a mount at ${at}`).toBeUndefined()
      if (mounter().check != null) await expect(mounter().check?.(at)).rejects.toThrow()
      if (mounter().held != null) expect(await mounter().held?.()).not.toContain(resolve(at))
    }
    const test = (key: keyof typeof SUITE_TESTS, fn: () => Promise<void>, timeout?: number): void => {
      const title = SUITE_TESTS[key]
      const why = options.knownFailures?.[key]
      if (why != null) it.fails(`${title} [known failure: ${why}]`, fn, timeout)
      else it(title, fn, timeout)
    }

    beforeAll(async () => {
      dir = await tempDir('layer-mounter-suite')
      store = await LayerStore.create()
      main = await store.add({
        'etc/hello.txt': Buffer.from(`hello from ${name}\n`),
        'usr/big.bin': fixtureBytes(31, 9 * SMALL_CHUNK + 321),
        'usr/empty': Buffer.alloc(0)
      })
      other = await store.add({ 'other.txt': Buffer.from('another layer\n') })
      for (const seed of [41, 42]) {
        slow.push(await store.add({ 'etc/hello.txt': Buffer.from(`slow layer ${seed}\n`), 'usr/big.bin': fixtureBytes(seed, 5 * SMALL_CHUNK + 99) }, ['usr/big.bin']))
      }
      notEstargz = await store.addBytes(fixtureBytes(51, 100_000))
      fixture = await makeFixture({ dir: join(dir, 'fixture'), openSource: store.openSource, settings: { backgroundFetch: false, prefetchTimeoutMs: 20_000, fetchTimeoutMs: 10_000, waitForPrefetchAtMount: true } })
    }, 60_000)

    afterAll(async () => {
      store?.release()
      for (const p of used) await fixture?.mounter.unmount(p).catch(() => {})
      await fixture?.cleanup()
      if (dir != null) {
        await unmountUnder(dir)
        await removeDir(dir)
      }
      await store?.close()
    }, 60_000)

    test('mount', async () => {
      const at = await mp('mount')
      const handle = await mounter().mount(at, {}, ref(main))
      await expectReads(at, main)
      expect((await run('ls', ['-A', at])).stdout.split('\n').filter(n => n !== '').sort()).toEqual(['etc', 'usr'])
      const used = await handle.usage?.()
      expect(used).toBeGreaterThan(0)
      expect(used).toBeLessThanOrEqual(main.size)
      await mounter().check?.(at)
      await mounter().unmount(at)
    })

    test('options', async () => {
      const at = await mp('options')
      await mounter().mount(at, {}, ref(other))
      const m = await mountAt(at)
      expect(m).toMatchObject({ fstype: 'fuse', source: 'ipfs-estargz' })
      expect(m?.options).toEqual(expect.arrayContaining(['ro', 'nosuid', 'nodev']))
      await mounter().unmount(at)
    })

    test('unmount', async () => {
      const at = await mp('unmount')
      await mounter().mount(at, {}, ref(other))
      expect(await cat(join(at, 'other.txt'))).toEqual(other.files['other.txt'])
      await mounter().unmount(at)
      await expectFree(at)
      await mounter().unmount(at) // nothing mounted: succeeds
      await mounter().unmount(await mp('never-mounted'))
    })

    test('labelsToc', async () => {
      const at = await mp('labels-toc')
      await mounter().mount(at, { [LABELS.tocDigest]: other.tocDigest }, ref(other, null))
      expect(await cat(join(at, 'other.txt'))).toEqual(other.files['other.txt'])
      await mounter().unmount(at)
      // the ref's digest wins over the labels'
      const err = await failure(mounter().mount(at, { [LABELS.tocDigest]: other.tocDigest }, ref(other, main.tocDigest)))
      expect(codeOf(err)).toBe('ERR_TOC_DIGEST_MISMATCH')
      await mounter().unmount(at)
      await expectFree(at)
    })

    test('tocHint', async () => {
      const bytes = await cat(join(store.dir, 'layer1.esgz')) // `other`, built second
      expect(bytes.length).toBe(other.size)
      const member = bytes.subarray(other.tocOffset, bytes.length - 51)
      const memberCid = await store.addBytes(member)
      const hint = (offset: number): Record<string, string> => ({ [LABELS.tocCid]: memberCid, [LABELS.tocOffset]: String(offset) })
      const tailReads = (from: number): number => store.reads.slice(from).filter(r => r.cid === other.cid && r.offset + r.length > other.tocOffset).length
      const at = await mp('toc-hint')
      let from = store.reads.length
      await mounter().mount(at, hint(other.tocOffset), ref(other))
      expect(tailReads(from)).toBe(0)
      expect(store.reads.slice(from).filter(r => r.cid === memberCid)).toEqual([{ cid: memberCid, offset: 0, length: member.length + 1 }])
      expect(await cat(join(at, 'other.txt'))).toEqual(other.files['other.txt'])
      await mounter().unmount(at)
      from = store.reads.length
      await mounter().mount(at, hint(other.tocOffset + 1), ref(other))
      expect(tailReads(from)).toBeGreaterThan(0)
      expect(await cat(join(at, 'other.txt'))).toEqual(other.files['other.txt'])
      await mounter().unmount(at)
      // a hint naming a block nobody has: the footer is read, the mount is right
      from = store.reads.length
      await mounter().mount(at, { [LABELS.tocCid]: 'bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy', [LABELS.tocOffset]: String(other.tocOffset) }, ref(other))
      expect(tailReads(from)).toBeGreaterThan(0)
      expect(await cat(join(at, 'other.txt'))).toEqual(other.files['other.txt'])
      await mounter().unmount(at)
      await expectFree(at)
    })

    test('badToc', async () => {
      const at = await mp('bad-toc')
      const err = await failure(mounter().mount(at, {}, ref(main, 'sha256:' + '0'.repeat(64))))
      expect(codeOf(err)).toBe('ERR_TOC_DIGEST_MISMATCH')
      expect((err as Error).message).toContain('sha256:' + '0'.repeat(64))
      await mounter().unmount(at) // what the snapshotter does after a failed mount
      await expectFree(at)
      await mounter().mount(at, {}, ref(main))
      expect(await cat(join(at, 'etc/hello.txt'))).toEqual(main.files['etc/hello.txt'])
      await mounter().unmount(at)
    })

    test('noToc', async () => {
      const at = await mp('no-toc')
      const err = await failure(mounter().mount(at, {}, ref(main, null)))
      expect(codeOf(err)).toBe('ERR_FS_TOC_DIGEST_REQUIRED')
      await mounter().unmount(at)
      await expectFree(at)
    })

    test('badLayer', async () => {
      const at = await mp('not-estargz')
      const err = await failure(mounter().mount(at, {}, { cid: notEstargz, tocDigest: main.tocDigest, via: 'urls' }))
      expect(codeOf(err)).toBe('ERR_BAD_FOOTER')
      await mounter().unmount(at)
      await expectFree(at)
    })

    test('notFound', async () => {
      const at = await mp('unknown')
      const unknown = (await importBytes(new MemStore(), Buffer.from('stored nowhere'))).cid.toString()
      const err = await failure(mounter().mount(at, {}, { cid: unknown, tocDigest: main.tocDigest, via: 'urls' }))
      expect(codeOf(err)).toBe(fx().notFoundCode)
      expect((err as Error).message).toContain(unknown)
      await mounter().unmount(at)
      await expectFree(at)
    })

    test('occupied', async () => {
      const at = await mp('occupied')
      const first = await mounter().mount(at, {}, ref(main))
      const before = await mountAt(at)
      const err = await failure(mounter().mount(at, {}, ref(other)))
      expect(codeOf(err)).toBe(fx().conflictCode)
      expect(await mountAt(at)).toEqual(before)
      await mounter().check?.(at)
      await expectReads(at, main)
      const again = fx().sameLayerAgain
      if (again === 'kept') {
        const handle = await mounter().mount(at, {}, ref(main))
        expect(await handle.usage?.()).toBe(await first.usage?.()) // the same mount, with what it fetched
      } else {
        expect(codeOf(await failure(mounter().mount(at, {}, ref(main))))).toBe(again)
      }
      expect(await mountAt(at)).toEqual(before)
      await expectReads(at, main)
      await mounter().unmount(at)
      await expectFree(at)
    })

    test('parallel', async () => {
      const ats = await Promise.all(['p1', 'p2', 'p3'].map(mp))
      const layers = [main, other, main]
      await Promise.all(ats.map(async (at, i) => await mounter().mount(at, {}, ref(layers[i]))))
      await Promise.all(ats.map(async (at, i) => { await expectReads(at, layers[i]) }))
      for (const at of ats) await mounter().unmount(at)
      for (const at of ats) await expectFree(at)
    })

    test('abortBefore', async () => {
      const at = await mp('abort-before')
      const ac = new AbortController()
      ac.abort()
      await failure(mounter().mount(at, {}, ref(other), ac.signal))
      await mounter().unmount(at)
      await expectFree(at)
    })

    /** Mounts `l` at `at` with reads picked by `when` held back 2.5 s; aborts after 300 ms. */
    const abortWhileHeld = async (at: string, l: Layer, when: (offset: number, length: number) => boolean): Promise<void> => {
      const ms = 2_500
      store.holdReads(l, when, ms)
      try {
        const ac = new AbortController()
        const started = Date.now()
        setTimeout(() => ac.abort(), 300)
        const err = await failure(mounter().mount(at, {}, ref(l), ac.signal))
        const took = Date.now() - started
        expect(store.hold.held, 'a read was held back').toBeGreaterThan(0)
        expect(err).toBeInstanceOf(Error)
        expect(took, 'rejected promptly after the abort').toBeLessThan(1_500)
        await mounter().unmount(at)
        await expectFree(at)
        // longer than the held reads: a mount still going on would have landed by now
        await sleep(ms + 700 - (Date.now() - started))
        await expectFree(at)
      } finally {
        store.release()
      }
    }

    test('abortToc', async () => {
      const l = slow[0]
      await abortWhileHeld(await mp('abort-toc'), l, (o, n) => o + n > l.tocOffset) // the reads that reach the TOC
    }, 20_000)

    test('abortPrefetch', async () => {
      const l = slow[1]
      await abortWhileHeld(await mp('abort-prefetch'), l, (o, n) => o + n <= l.tocOffset) // the files' chunks
    }, 20_000)
  })
}
