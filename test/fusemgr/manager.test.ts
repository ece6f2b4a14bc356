import { existsSync } from 'node:fs'
import { createServer } from 'node:http'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BlobReader } from '../../src/daemon/blob-api.js'
import { ControlServer } from '../../src/daemon/control.js'
import { EstargzReader, buildEstargzFile } from '../../src/estargz/index.js'
import { fuseMountsUnder } from '../../src/fs/mountinfo.js'
import { FuseManager, FuseManagerCancelledError, FuseManagerClient, FuseManagerError } from '../../src/fusemgr/index.js'
import { silentLogger } from '../../src/logging.js'
import { FileSource } from '../../src/source/file.js'
import type { RangeSource } from '../../src/source/types.js'
import { hasCommand, hasFuse, isRoot, needs } from '../helpers/env.js'
import { SMALL_CHUNK } from '../helpers/fixtures.js'
import { fixtureBytes, makeTar } from '../../scripts/fixtures/tar.js'
import { removeDir, tempDir } from '../fs/helpers.js'

const logger = silentLogger()
const FILES = {
  'etc/hello.txt': Buffer.from('hello from a lazy layer\n'),
  'usr/big.bin': fixtureBytes(7, 9 * SMALL_CHUNK + 321),
  'usr/late.bin': fixtureBytes(8, 3 * SMALL_CHUNK + 5),
  'usr/never.bin': fixtureBytes(9, 2 * SMALL_CHUNK + 77)
}

/** Files of a layer whose mount prefetches usr/big.bin; each seed gives other chunks (the chunk cache is shared). */
const slowFiles = (seed: number): Record<string, Buffer> => ({
  'etc/hello.txt': Buffer.from(`hello from slow layer ${seed}\n`),
  'usr/big.bin': fixtureBytes(seed, 5 * SMALL_CHUNK + 99)
})

interface SlowLayer { cid: string, toc: string, tocOffset: number, files: Record<string, Buffer> }

async function cidOf (bytes: Uint8Array): Promise<string> {
  return CID.createV1(raw.code, await sha256.digest(bytes)).toString()
}

/** Reads of one blob the stand-in daemon holds back for `ms` (a slow peer). */
interface Stall { cid?: string, ms: number, when: (offset: number, length: number) => boolean, held?: number }

/** A daemon stand-in: the real control server with the real blob API, over local blob files. */
async function startBlobApi (address: string, repo: string, blobs: Map<string, string>, counter: { bytes: number, reads?: Array<{ cid: string, offset: number, length: number }> }, stall?: Stall): Promise<ControlServer> {
  const reader = new BlobReader({
    logger,
    openSource: async (cid) => {
      const path = blobs.get(cid)
      if (path == null) throw Object.assign(new Error(`block ${cid} is not anywhere`), { code: 'ERR_BLOCK_NOT_FOUND' })
      const src = await FileSource.open(path)
      const counted: RangeSource = {
        size: async () => await src.size(),
        read: async (o, l, s) => {
          counter.reads?.push({ cid, offset: o, length: l })
          if (stall?.cid === cid && stall.when(o, l)) {
            stall.held = (stall.held ?? 0) + 1
            await new Promise(resolve => setTimeout(resolve, stall.ms))
          }
          const b = await src.read(o, l, s)
          counter.bytes += b.length
          return b
        },
        close: async () => { await src.close() }
      }
      return counted
    }
  })
  const server = new ControlServer({ logger, blobs: reader, run: async () => 0 }, { address, repo })
  await server.start()
  return server
}

/** Reads a file of a mount served by this process: async only (a sync read would deadlock). */
async function readMounted (path: string): Promise<Buffer> {
  return await readFile(path)
}

describe.skipIf(needs({ root: isRoot, fuse: hasFuse, fusermount: hasCommand('fusermount') }))('FUSE manager (real FUSE mounts, blob API over a unix socket)', () => {
  let dir: string
  let manager: FuseManager
  let client: FuseManagerClient
  let api: ControlServer | undefined
  let apiSocket: string
  let cid: string
  let otherCid: string
  let tocDigest: string
  let otherToc: string
  // layers whose mounts prefetch usr/big.bin (before `.prefetch.landmark`): reads they can stall
  const slow: SlowLayer[] = []
  const stall: Stall = { ms: 0, when: () => false }
  const blobs = new Map<string, string>()
  const fetched: { bytes: number, reads: Array<{ cid: string, offset: number, length: number }> } = { bytes: 0, reads: [] }

  beforeAll(async () => {
    dir = await tempDir('fusemgr')
    const tar = join(dir, 'layer.tar')
    await writeFile(tar, makeTar(Object.entries(FILES).map(([name, data]) => ({ name, data }))))
    const blob = join(dir, 'layer.esgz')
    tocDigest = (await buildEstargzFile(tar, blob, { chunkSize: SMALL_CHUNK })).tocDigest
    cid = await cidOf(await readFile(blob))
    blobs.set(cid, blob)
    const tar2 = join(dir, 'other.tar')
    await writeFile(tar2, makeTar([{ name: 'other.txt', data: 'another layer\n' }]))
    const blob2 = join(dir, 'other.esgz')
    otherToc = (await buildEstargzFile(tar2, blob2)).tocDigest
    otherCid = await cidOf(await readFile(blob2))
    blobs.set(otherCid, blob2)
    for (const seed of [17, 18, 19, 20]) {
      const files = slowFiles(seed)
      const slowTar = join(dir, `slow${seed}.tar`)
      await writeFile(slowTar, makeTar(Object.entries(files).map(([name, data]) => ({ name, data }))))
      const slowBlob = join(dir, `slow${seed}.esgz`)
      const toc = (await buildEstargzFile(slowTar, slowBlob, { chunkSize: SMALL_CHUNK, prioritizedFiles: ['usr/big.bin'] })).tocDigest
      const bytes = await readFile(slowBlob)
      const layer = { cid: await cidOf(bytes), toc, tocOffset: (await EstargzReader.open(async (o, l) => bytes.subarray(o, o + l), bytes.length)).tocOffset, files }
      blobs.set(layer.cid, slowBlob)
      slow.push(layer)
    }
    apiSocket = join(dir, 'api.sock')
    api = await startBlobApi(apiSocket, dir, blobs, fetched, stall)
    manager = new FuseManager({ logger }, { socket: join(dir, 'fm.sock'), mountRoot: join(dir, 'mnt'), cacheDir: join(dir, 'cache'), idleExitMs: 3_600_000, warmTtlMs: 1_000 })
    await manager.start()
    client = new FuseManagerClient(join(dir, 'fm.sock'))
  })

  afterAll(async () => {
    await manager?.stop()
    await api?.stop()
    await removeDir(dir)
  })

  const mp = (name: string): string => join(dir, 'mnt', name)

  it('mounts a layer that reads right, fetched through the daemon\'s blob API', async () => {
    expect((await client.health()).blobSocket).toBeUndefined()
    await client.attach({ blobSocket: apiSocket })
    await mkdir(mp('a'), { recursive: true })
    const reply = await client.mount({ mountpoint: mp('a'), cid, tocDigest, settings: { backgroundFetch: false } })
    expect(reply).toMatchObject({ mounted: true, tocDigest, warm: false })
    expect((await fuseMountsUnder(join(dir, 'mnt'))).map(m => m.mountpoint)).toEqual([mp('a')])
    expect(await readMounted(join(mp('a'), 'etc/hello.txt'))).toEqual(FILES['etc/hello.txt'])
    expect(await readMounted(join(mp('a'), 'usr/big.bin'))).toEqual(FILES['usr/big.bin'])
    const [info] = await client.mounts()
    expect(info).toMatchObject({ mountpoint: mp('a'), cid, tocDigest })
    expect(info.bytesFetched).toBeGreaterThan(0)
    expect(fetched.bytes).toBeGreaterThanOrEqual(info.bytesFetched)
    await client.check(mp('a'))
  })

  it('mount is idempotent for the same layer and refuses another layer on the same mountpoint', async () => {
    expect(await client.mount({ mountpoint: mp('a'), cid, tocDigest })).toEqual({ mounted: false, tocDigest })
    const err = await client.mount({ mountpoint: mp('a'), cid: otherCid }).catch((e: FuseManagerError) => e)
    expect(err).toBeInstanceOf(FuseManagerError)
    expect((err as FuseManagerError).remoteCode).toBe('ERR_MOUNT_CONFLICT')
    expect((await client.mounts()).length).toBe(1)
  })

  it('while the daemon is away, an uncached read waits and completes once a daemon is back', async () => {
    await api?.stop()
    api = undefined
    const pending = readMounted(join(mp('a'), 'usr/late.bin'))
    let settled = false
    void pending.finally(() => { settled = true }).catch(() => {})
    await new Promise(resolve => setTimeout(resolve, 800))
    expect(settled).toBe(false)
    // cached files keep reading meanwhile
    expect(await readMounted(join(mp('a'), 'etc/hello.txt'))).toEqual(FILES['etc/hello.txt'])
    api = await startBlobApi(apiSocket, dir, blobs, fetched, stall)
    await client.attach({ blobSocket: apiSocket })
    expect(await pending).toEqual(FILES['usr/late.bin'])
  })

  it('a daemon that stays away: the read fails with ETIMEDOUT after the fetch timeout, the mount keeps serving cached files', async () => {
    await mkdir(mp('b'), { recursive: true })
    await client.mount({ mountpoint: mp('b'), cid, tocDigest, settings: { backgroundFetch: false, fetchTimeoutMs: 1_000 } })
    await api?.stop()
    api = undefined
    const t0 = Date.now()
    const err = await readMounted(join(mp('b'), 'usr/never.bin')).catch((e: NodeJS.ErrnoException) => e)
    expect((err as NodeJS.ErrnoException).code).toBe('ETIMEDOUT') // the layer fs's errno for a fetch timeout
    expect(Date.now() - t0).toBeLessThan(10_000)
    expect(await readMounted(join(mp('b'), 'etc/hello.txt'))).toEqual(FILES['etc/hello.txt'])
    api = await startBlobApi(apiSocket, dir, blobs, fetched, stall)
    expect(await readMounted(join(mp('b'), 'usr/never.bin'))).toEqual(FILES['usr/never.bin'])
    await client.unmount(mp('b'))
  })

  it('an unknown CID or a wrong TOC digest: the mount fails with the reason and leaves nothing mounted', async () => {
    await mkdir(mp('c'), { recursive: true })
    const unknown = await cidOf(Buffer.from('nothing'))
    const e1 = await client.mount({ mountpoint: mp('c'), cid: unknown, tocDigest, settings: { fetchTimeoutMs: 2_000 } }).catch((e: Error) => e)
    expect((e1 as Error).message).toMatch(/not anywhere/)
    const e2 = await client.mount({ mountpoint: mp('c'), cid, tocDigest: 'sha256:' + '0'.repeat(64) }).catch((e: Error) => e)
    expect((e2 as Error).message).toMatch(/TOC|digest/i)
    expect((await client.mounts()).map(m => m.mountpoint)).toEqual([mp('a')])
    expect((await fuseMountsUnder(join(dir, 'mnt'))).map(m => m.mountpoint)).toEqual([mp('a')])
    const e3 = await client.check(mp('c')).catch((e: FuseManagerError) => e)
    expect(e3).toMatchObject({ code: 'ERR_FUSE_MANAGER', remoteCode: 'ERR_NOT_MOUNTED', status: 404 })
  })

  it('answers malformed calls with 400/404 and keeps serving', async () => {
    const { request } = await import('node:http')
    const call = async (method: string, path: string, body: string): Promise<{ status: number, json: { code?: string } }> => await new Promise((resolve, reject) => {
      const req = request({ socketPath: join(dir, 'fm.sock'), method, path, agent: false }, (res) => {
        let text = ''
        res.on('data', (c: Buffer) => { text += c.toString() })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as { code?: string } }))
      })
      req.on('error', reject)
      req.end(body)
    })
    expect(await call('POST', '/v1/mount', '{not json')).toMatchObject({ status: 400, json: { code: 'ERR_BAD_REQUEST' } })
    // a call refused without an error of its own answers the manager's code, as it always did
    expect(await call('POST', '/v1/mount', '{"mountpoint":1}')).toMatchObject({ status: 400, json: { code: 'ERR_FUSE_MANAGER' } })
    expect(await call('POST', '/v1/attach', '{}')).toMatchObject({ status: 400, json: { code: 'ERR_FUSE_MANAGER' } })
    expect(await call('GET', '/v1/nope', '')).toMatchObject({ status: 404, json: { code: 'ERR_FUSE_MANAGER' } })
    expect((await client.health()).mounts).toBe(1)
  })

  const fuseAt = async (mountpoint: string): Promise<string[]> => (await fuseMountsUnder(mountpoint)).map(m => m.mountpoint)

  it('health reports the unmount helper every unmount of the manager goes through', async () => {
    await mkdir(mp('h'), { recursive: true })
    await client.mount({ mountpoint: mp('h'), cid: slow[0].cid, tocDigest: slow[0].toc, settings: { backgroundFetch: false } })
    const before = (await client.health()).unmountHelper
    expect(before?.pid).toBeGreaterThan(0)
    await client.unmount(mp('h'))
    expect(await fuseAt(mp('h'))).toEqual([])
    const after = (await client.health()).unmountHelper
    expect(after).toMatchObject({ pid: before?.pid, detached: (before?.detached ?? 0) + 1, failed: before?.failed })
  })

  it('a mount slower than 5 s (its TOC comes after 6 s) succeeds: no socket timeout of Node\'s cuts it', async () => {
    await mkdir(mp('e'), { recursive: true })
    Object.assign(stall, { cid: slow[0].cid, ms: 6_000, when: (o: number, n: number) => o + n > slow[0].tocOffset })
    try {
      const started = Date.now()
      const reply = await new FuseManagerClient(join(dir, 'fm.sock')).mount({ mountpoint: mp('e'), cid: slow[0].cid, tocDigest: slow[0].toc, settings: { backgroundFetch: false, waitForPrefetchAtMount: true } }, AbortSignal.timeout(20_000))
      expect(reply).toMatchObject({ mounted: true, tocDigest: slow[0].toc })
      expect(Date.now() - started).toBeGreaterThanOrEqual(6_000)
    } finally {
      stall.cid = undefined
    }
    expect(await readMounted(join(mp('e'), 'etc/hello.txt'))).toEqual(slow[0].files['etc/hello.txt'])
    await client.unmount(mp('e'))
    expect(await fuseAt(mp('e'))).toEqual([])
  }, 30_000)

  it('a mount whose caller hangs up during the prefetch is cancelled: the FUSE mount that completes afterwards is undone at once', async () => {
    await mkdir(mp('f'), { recursive: true })
    Object.assign(stall, { cid: slow[1].cid, ms: 1_500, when: (o: number, n: number) => o + n <= slow[1].tocOffset, held: 0 })
    try {
      const err = await client.mount({ mountpoint: mp('f'), cid: slow[1].cid, tocDigest: slow[1].toc, settings: { backgroundFetch: false, waitForPrefetchAtMount: true } }, AbortSignal.timeout(300)).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(FuseManagerCancelledError)
      expect(stall.held).toBeGreaterThan(0) // it was cancelled in the prefetch, after the TOC
      // longer than the stall: the prefetch ended, the mount would have landed by now
      await new Promise(resolve => setTimeout(resolve, 2_500))
      expect(await fuseAt(mp('f'))).toEqual([])
      expect((await client.mounts()).map(m => m.mountpoint)).not.toContain(mp('f'))
    } finally {
      stall.cid = undefined
    }
  }, 30_000)

  it('unmount of a mountpoint whose mount is in progress cancels it and answers once nothing is, or will be, mounted there', async () => {
    await mkdir(mp('g'), { recursive: true })
    Object.assign(stall, { cid: slow[2].cid, ms: 1_500, when: (o: number, n: number) => o + n <= slow[2].tocOffset, held: 0 })
    try {
      const mounting = client.mount({ mountpoint: mp('g'), cid: slow[2].cid, tocDigest: slow[2].toc, settings: { backgroundFetch: false, waitForPrefetchAtMount: true } }).catch((e: unknown) => e)
      await new Promise(resolve => setTimeout(resolve, 300))
      expect(stall.held).toBeGreaterThan(0) // in the prefetch
      await client.unmount(mp('g'))
      expect(await fuseAt(mp('g'))).toEqual([])
      const err = await mounting
      expect((err as FuseManagerError).remoteCode).toBe('ERR_MOUNT_CANCELLED')
      await new Promise(resolve => setTimeout(resolve, 2_000))
      expect(await fuseAt(mp('g'))).toEqual([])
    } finally {
      stall.cid = undefined
    }
  }, 30_000)

  it('warm opens a layer ahead (footer and TOC, verified); the mount of the same layer takes it and reads no TOC again', async () => {
    const settings = { backgroundFetch: false }
    const tocReads = (): number => fetched.reads.filter(r => r.cid === slow[0].cid && r.offset + r.length > slow[0].tocOffset).length
    const before = (await client.health()).warm ?? { hits: 0 }
    const first = await client.warm({ cid: slow[0].cid, tocDigest: slow[0].toc, settings })
    expect(first).toEqual({ opened: true, tocDigest: slow[0].toc })
    expect(await client.warm({ cid: slow[0].cid, tocDigest: slow[0].toc, settings })).toEqual({ opened: false, tocDigest: slow[0].toc })
    const afterWarm = tocReads()
    expect(afterWarm).toBeGreaterThan(0)
    await mkdir(mp('h'), { recursive: true })
    const reply = await client.mount({ mountpoint: mp('h'), cid: slow[0].cid, tocDigest: slow[0].toc, settings })
    expect(reply).toMatchObject({ mounted: true, warm: true, timings: { tocMs: expect.any(Number) } })
    expect(tocReads()).toBe(afterWarm)
    expect((await client.health()).warm?.hits).toBe(before.hits + 1)
    expect(await readMounted(join(mp('h'), 'usr/big.bin'))).toEqual(slow[0].files['usr/big.bin'])
    await client.unmount(mp('h'))
  })

  it('warm and mount with a TOC hint read the TOC member\'s own block and nothing of the layer; a hint that does not hold reads the footer', async () => {
    const settings = { backgroundFetch: false, prefetchTimeoutMs: 1 }
    const layer = slow[1]
    const bytes = await readFile(blobs.get(layer.cid) as string)
    const member = bytes.subarray(layer.tocOffset, bytes.length - 51)
    const memberFile = join(dir, 'slow-toc.member')
    await writeFile(memberFile, member)
    const memberCid = await cidOf(member)
    blobs.set(memberCid, memberFile)
    const readsOf = (c: string): Array<{ offset: number, length: number }> => fetched.reads.filter(r => r.cid === c)
    const layerReads = readsOf(layer.cid).length
    const hints = (await client.health()).tocHints ?? { given: 0, refused: 0 }
    expect(await client.warm({ cid: layer.cid, tocDigest: layer.toc, toc: { cid: memberCid, offset: layer.tocOffset }, settings })).toEqual({ opened: true, tocDigest: layer.toc })
    expect(readsOf(layer.cid)).toHaveLength(layerReads) // no footer, no TOC read of the layer
    expect(readsOf(memberCid)).toEqual([{ cid: memberCid, offset: 0, length: member.length + 1 }]) // one byte more: a longer block would show
    await mkdir(mp('t1'), { recursive: true })
    expect(await client.mount({ mountpoint: mp('t1'), cid: layer.cid, tocDigest: layer.toc, toc: { cid: memberCid, offset: layer.tocOffset }, settings })).toMatchObject({ mounted: true, warm: true })
    expect(await readMounted(join(mp('t1'), 'usr/big.bin'))).toEqual(layer.files['usr/big.bin'])
    await client.unmount(mp('t1'))
    // an offset that does not hold: refused, the footer read instead, the mount right all the same
    await mkdir(mp('t2'), { recursive: true })
    const before = readsOf(layer.cid).length
    expect(await client.mount({ mountpoint: mp('t2'), cid: layer.cid, tocDigest: layer.toc, toc: { cid: memberCid, offset: layer.tocOffset - 1 }, settings })).toMatchObject({ mounted: true, warm: false })
    expect(readsOf(layer.cid).slice(before).some(r => r.offset + r.length === bytes.length)).toBe(true) // the footer
    expect(await readMounted(join(mp('t2'), 'usr/big.bin'))).toEqual(layer.files['usr/big.bin'])
    await client.unmount(mp('t2'))
    expect((await client.health()).tocHints).toEqual({ given: hints.given + 2, refused: hints.refused + 1 })
    // a malformed hint is refused as a bad request
    const bad = await client.warm({ cid: layer.cid, tocDigest: layer.toc, toc: { cid: memberCid, offset: -1 } }).catch((e: Error) => e)
    expect(bad).toMatchObject({ status: 400 })
  })

  it('a warm nobody mounts is released after its time; a warm with the wrong TOC digest fails with the reason', async () => {
    const settings = { backgroundFetch: false }
    expect(await client.warm({ cid: slow[0].cid, tocDigest: slow[0].toc, settings })).toMatchObject({ opened: true })
    await new Promise(resolve => setTimeout(resolve, 1_500)) // warmTtlMs is 1 s here
    await mkdir(mp('i'), { recursive: true })
    const reply = await client.mount({ mountpoint: mp('i'), cid: slow[0].cid, tocDigest: slow[0].toc, settings })
    expect(reply).toMatchObject({ mounted: true, warm: false })
    expect((await client.health()).warm).toMatchObject({ ready: 0, expired: expect.any(Number) })
    expect((await client.health()).warm?.expired).toBeGreaterThanOrEqual(1)
    await client.unmount(mp('i'))
    const bad = await client.warm({ cid: slow[0].cid, tocDigest: 'sha256:' + '0'.repeat(64) }).catch((e: Error) => e)
    expect((bad as Error).message).toMatch(/TOC|digest/i)
    expect((await client.health()).warm?.ready).toBe(0)
  })

  it('prefetch caches a layer\'s recorded ranges: asked before the layer opens, it starts at the mount; those reads then never reach the daemon', async () => {
    const files = { 'a.bin': fixtureBytes(31, 4 * SMALL_CHUNK + 3), 'b.bin': fixtureBytes(32, 5 * SMALL_CHUNK + 7) }
    const tar = join(dir, 'recorded.tar')
    await writeFile(tar, makeTar(Object.entries(files).map(([name, data]) => ({ name, data }))))
    const path = join(dir, 'recorded.esgz')
    const toc = (await buildEstargzFile(tar, path, { chunkSize: SMALL_CHUNK })).tocDigest
    const bytes = await readFile(path)
    const layer = await cidOf(bytes)
    blobs.set(layer, path)
    const chunks = (await EstargzReader.open(async (o, l) => bytes.subarray(o, o + l), bytes.length)).lookup('b.bin')?.chunks ?? []
    const ranges: Array<[number, number]> = [[chunks[0].offset, chunks[chunks.length - 1].compressedEnd - chunks[0].offset]]
    const before = (await client.health()).prefetch ?? { requests: 0, finished: 0 }

    expect(await client.prefetch({ cid: layer, ranges })).toEqual({ state: 'waiting' })
    await mkdir(mp('p'), { recursive: true })
    await client.mount({ mountpoint: mp('p'), cid: layer, tocDigest: toc, settings: { backgroundFetch: false, readWindowBytes: 0, neighbourBytes: 0 } })
    const deadline = Date.now() + 10_000
    while ((await client.health()).prefetch?.finished !== before.finished + 1) {
      if (Date.now() > deadline) throw new Error(`the prefetch did not finish: ${JSON.stringify((await client.health()).prefetch)}`)
      await new Promise(resolve => setTimeout(resolve, 50))
    }
    expect((await client.health()).prefetch).toMatchObject({ requests: before.requests + 1, failed: 0, waiting: 0 })
    const readsOf = (): number => fetched.reads.filter(r => r.cid === layer).length
    const n = readsOf()
    expect(await readMounted(join(mp('p'), 'b.bin'))).toEqual(files['b.bin'])
    expect(readsOf()).toBe(n) // cached before the read
    expect(await readMounted(join(mp('p'), 'a.bin'))).toEqual(files['a.bin'])
    expect(readsOf()).toBeGreaterThan(n) // not in the record: read on demand

    // on an open layer it starts at once; malformed calls are refused with 400
    expect(await client.prefetch({ cid: layer, ranges })).toEqual({ state: 'started' })
    for (const body of [{ cid: layer }, { cid: layer, ranges: [[1]] }, { cid: layer, ranges: [[-1, 5]] }, { ranges }]) {
      const err = await client.prefetch(body as never).catch((e: FuseManagerError) => e)
      expect(err, JSON.stringify(body)).toBeInstanceOf(FuseManagerError)
      expect((err as FuseManagerError).status).toBe(400)
    }
    await client.unmount(mp('p'))
  })

  it('ranges offered while the layer\'s mount is in progress (its layer opened ahead and taken by the mount) start once it is mounted, not never', async () => {
    const layer = slow[3]
    const settings = { backgroundFetch: false, waitForPrefetchAtMount: true }
    await mkdir(mp('q'), { recursive: true })
    expect(await client.warm({ cid: layer.cid, tocDigest: layer.toc, settings })).toMatchObject({ opened: true })
    Object.assign(stall, { cid: layer.cid, ms: 1_500, when: (o: number, n: number) => o + n <= layer.tocOffset, held: 0 })
    try {
      const before = (await client.health()).prefetch ?? { requests: 0, finished: 0 }
      const mounting = client.mount({ mountpoint: mp('q'), cid: layer.cid, tocDigest: layer.toc, settings })
      for (let i = 0; i < 100 && (stall.held ?? 0) === 0; i++) await new Promise(resolve => setTimeout(resolve, 20))
      expect(stall.held).toBeGreaterThan(0) // the mount is in its prefetch: neither warm nor mounted
      expect(await client.prefetch({ cid: layer.cid, ranges: [[0, 100]] })).toEqual({ state: 'started' })
      expect(await mounting).toMatchObject({ mounted: true })
      const deadline = Date.now() + 10_000
      while ((await client.health()).prefetch?.finished !== before.finished + 1) {
        if (Date.now() > deadline) throw new Error(`the prefetch did not finish: ${JSON.stringify((await client.health()).prefetch)}`)
        await new Promise(resolve => setTimeout(resolve, 50))
      }
      expect((await client.health()).prefetch).toMatchObject({ waiting: 0, failed: 0 })
    } finally {
      stall.cid = undefined
    }
    await client.unmount(mp('q'))
  }, 30_000)

  it('attach asks the daemon\'s health route at once (a first read then finds the client warm and the daemon known to answer)', async () => {
    const asked: string[] = []
    const probe = join(dir, 'probe.sock')
    const server = createServer((req, res) => { asked.push(`${req.method ?? ''} ${req.url ?? ''}`); res.end('{"ok":true}') })
    await new Promise<void>(resolve => server.listen(probe, resolve))
    try {
      await client.attach({ blobSocket: probe })
      for (let i = 0; i < 100 && asked.length === 0; i++) await new Promise(resolve => setTimeout(resolve, 20))
      expect(asked).toEqual(['GET /v1/health'])
    } finally {
      await client.attach({ blobSocket: apiSocket })
      server.closeAllConnections()
      await new Promise(resolve => server.close(resolve))
    }
  })

  it('unmount detaches the layer; shutdown unmounts everything and removes the socket', async () => {
    await client.unmount(mp('a'))
    expect(await fuseMountsUnder(join(dir, 'mnt'))).toEqual([])
    await mkdir(mp('d'), { recursive: true })
    await client.mount({ mountpoint: mp('d'), cid: otherCid, tocDigest: otherToc })
    expect(await readMounted(join(mp('d'), 'other.txt'))).toEqual(Buffer.from('another layer\n'))
    await client.shutdown()
    await manager.done()
    expect(await fuseMountsUnder(join(dir, 'mnt'))).toEqual([])
    expect(existsSync(join(dir, 'fm.sock'))).toBe(false)
  })
})
