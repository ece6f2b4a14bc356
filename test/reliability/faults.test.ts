/**
 * Faults not covered elsewhere: a peer that opens thousands of block-exchange streams to a real
 * node of ours (it refuses those beyond its per-connection limit, its heap stays bounded, an
 * honest peer is served meanwhile, the streams go away after), and a full disk under the chunk
 * cache (every read returns the right bytes, write failures are counted, not thrown, and writes
 * work again once space is freed).
 */
import { execFileSync } from 'node:child_process'
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import type { Stream } from '@libp2p/interface'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { afterAll, describe, expect, it } from 'vitest'
import { EstargzReader } from '../../src/estargz/index.js'
import { ChunkCache } from '../../src/fs/cache.js'
import { ChunkReader } from '../../src/fs/chunk-reader.js'
import { BlockExchange, DEFAULTS as EXCHANGE_DEFAULTS, PROTOCOL, PROTOCOL_COOPERATIVE, PROTOCOL_PENDING } from '../../src/ipfs/block-exchange.js'
import { createNode, type IpfsNode, type NodeOptions } from '../../src/ipfs/node.js'
import { silentLogger, type Logger } from '../../src/logging.js'
import { FileSource } from '../../src/source/file.js'
import { fixtureBytes } from '../../scripts/fixtures/tar.js'
import { hasCommand, isRoot, needs } from '../helpers/env.js'
import { TempRepos, random, until } from '../ipfs/helpers.js'
import { buildBlob } from '../fs/unit-helpers.js'
import { cases, record, within } from './harness.js'

const repos = new TempRepos()
const started: Array<{ stop: () => Promise<void> }> = []
const LISTEN = ['/ip4/127.0.0.1/tcp/0']

async function node (opts: Partial<NodeOptions> = {}): Promise<IpfsNode> {
  const n = await createNode({ repo: await repos.dir(), logger: silentLogger(), inboundConnectionsPerSec: 1000, ...opts })
  started.push(n)
  return n
}

const rawCid = async (bytes: Uint8Array): Promise<CID> => CID.createV1(raw.code, await sha256.digest(bytes))

/** V8's gc() (exposed at run time): heap figures after a collection measure what is held, not garbage. */
setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

function heapUsed (): number {
  gc()
  return process.memoryUsage().heapUsed
}

afterAll(async () => {
  for (const s of started.reverse()) await s.stop().catch(() => {})
  await repos.cleanup()
})

describe('fault: a peer opening thousands of block-exchange streams', () => {
  it('streams beyond the per-connection limit are refused, the heap stays bounded, an honest peer is served, the streams go away', async () => {
    const requestTimeout = 1_000
    const server = await node({ listen: LISTEN, exchange: { requestTimeout } })
    const blocks: Array<{ cid: CID, bytes: Uint8Array }> = []
    for (let i = 0; i < 24; i++) {
      const bytes = random(8_000 + i * 1_000)
      const cid = await rawCid(bytes)
      await server.localBlockstore.put(cid, bytes)
      blocks.push({ cid, bytes })
    }
    const hostile = await node({ exchange: false })
    await hostile.dial(server.multiaddrs()[0])
    const honestNode = await node({ exchange: false })
    await honestNode.dial(server.multiaddrs()[0])
    const honest = new BlockExchange({ libp2p: honestNode.helia.libp2p, blockstore: honestNode.localBlockstore, logger: silentLogger() }, { requestTimeout: 5_000 })
    await honest.start()
    started.push(honest)
    await until(() => honest.peers().some(p => p.equals(server.peerId)), 'identify')

    let peak = 0
    // The limit is libp2p's, per connection and per protocol id: each of the three ids has its own.
    const protocols = [PROTOCOL, PROTOCOL_PENDING, PROTOCOL_COOPERATIVE] as const
    const inboundOf = (protocol: string): number => server.helia.libp2p.getConnections(hostile.peerId)
      .flatMap(c => c.streams).filter(s => s.protocol === protocol).length
    const inbound = (): number => protocols.reduce((n, p) => n + inboundOf(p), 0)
    const peakOf: Record<string, number> = Object.fromEntries(protocols.map(p => [p, 0]))
    const sample = (): void => {
      for (const p of protocols) peakOf[p] = Math.max(peakOf[p], inboundOf(p))
      peak = Math.max(peak, inbound())
    }
    const attempts = cases(500, 2_000)
    const heapBefore = heapUsed()
    let opened = 0
    let refused = 0
    const held: Stream[] = []
    const flood = (async () => {
      // Batches of 50 at once: a flood, without the hostile side's own dial queue as the limit.
      for (let i = 0; i < attempts; i += 50) {
        await Promise.all(Array.from({ length: Math.min(50, attempts - i) }, async (_, j) => {
          try {
            const s = await hostile.helia.libp2p.dialProtocol(server.peerId, protocols[(i + j) % 3], { maxOutboundStreams: 100_000, signal: AbortSignal.timeout(10_000) })
            opened++
            held.push(s)
            // half say nothing; half start a request slowly: a length prefix, never the body
            if ((i + j) % 4 < 2) s.send(Uint8Array.of(40))
          } catch {
            refused++
          }
        }))
        sample()
      }
    })()
    // Meanwhile, an honest peer on its own connection gets every block, right, within a deadline.
    let honestBytes = 0
    let wrong = 0
    await within(20_000, 'honest gets during the flood', async () => {
      for (const b of blocks) {
        const got = await honest.get(b.cid)
        honestBytes += b.bytes.length
        if (got == null || !Buffer.from(got).equals(b.bytes)) wrong++
      }
    })
    await flood
    sample()
    const growthMiB = (heapUsed() - heapBefore) / 2 ** 20
    expect(wrong, 'honest blocks wrong or missing during the flood').toBe(0)
    expect(refused, `of ${attempts} streams, ${opened} opened`).toBeGreaterThan(0)
    for (const p of protocols) expect(peakOf[p], `inbound ${p} streams on the hostile connection`).toBeLessThanOrEqual(EXCHANGE_DEFAULTS.maxInboundStreams)
    expect(peak).toBeLessThanOrEqual(protocols.length * EXCHANGE_DEFAULTS.maxInboundStreams)
    expect(growthMiB, `heap grew by ${growthMiB.toFixed(1)} MiB`).toBeLessThan(64)
    // The server closes streams without a whole request after requestTimeout: the count goes back down.
    await until(() => inbound() === 0, 'the hostile streams closed by the server', 4 * requestTimeout + 5_000)
    // and it still serves, on the same hostile connection too once its streams are gone
    const after = new BlockExchange({ libp2p: hostile.helia.libp2p, blockstore: hostile.localBlockstore, logger: silentLogger() }, { requestTimeout: 5_000 })
    await after.start()
    try {
      await until(() => after.peers().some(p => p.equals(server.peerId)), 'identify')
      expect(Buffer.from(await after.get(blocks[0].cid) ?? []).equals(blocks[0].bytes)).toBe(true)
    } finally {
      await after.stop()
      for (const s of held) s.abort(new Error('done'))
    }
    record({ kind: 'fault', fault: `a peer opening ${attempts} block-exchange streams at once (silent or half-sent requests)`, injected: 1, survived: 1, note: `${refused} refused, at most ${peak} open at once; honest peer got ${blocks.length} blocks meanwhile; heap +${growthMiB.toFixed(1)} MiB` })
    record({ kind: 'wrong-bytes', what: 'block exchange during a stream flood', bytesChecked: honestBytes, wrong })
  }, 120_000)
})

/** A tmpfs mounted on a temp dir (root only): the chunk cache's directory on a disk that fills up. */
async function tmpfs (size: string): Promise<{ dir: string, remount: (size: string) => void, replace: (size: string) => void, unmount: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'faults-tmpfs-'))
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir])
  let mounted = true
  return {
    dir,
    remount: (s) => { execFileSync('mount', ['-o', `remount,size=${s}`, dir]) },
    // a new, empty disk in its place (everything on the old one gone)
    replace: (s) => {
      execFileSync('umount', [dir])
      execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${s},mode=0700`, 'tmpfs', dir])
    },
    unmount: async () => {
      if (mounted) execFileSync('umount', [dir])
      mounted = false
      await rm(dir, { recursive: true, force: true })
    }
  }
}

/** A logger that keeps the warnings (the cache's write failures are logged, not thrown). */
function warningsLogger (warnings: string[]): Logger {
  const log = silentLogger()
  return new Proxy(log, {
    get (target, prop, receiver) {
      if (prop === 'warn') return (obj: unknown, msg?: string) => { warnings.push(typeof obj === 'string' ? obj : msg ?? '') }
      if (prop === 'child') return () => warningsLogger(warnings)
      return Reflect.get(target, prop, receiver)
    }
  })
}

describe.skipIf(needs({ root: isRoot, mount: hasCommand('mount') }))('fault: a full disk under the chunk cache', () => {
  const cleanup: Array<() => Promise<void>> = []
  afterAll(async () => { for (const c of cleanup.reverse()) await c().catch(() => {}) })

  it('every read returns the right bytes, write failures are counted and logged, writes work again once space is freed or the disk replaced', async () => {
    const fs = await tmpfs('256k')
    cleanup.push(fs.unmount)
    const work = await mkdtemp(join(tmpdir(), 'faults-layer-'))
    cleanup.push(async () => { await rm(work, { recursive: true, force: true }) })
    // A layer of files in 64 KiB chunks several times the size of the disk (2.2 MiB in the full run).
    const files = Array.from({ length: cases(12, 24) }, (_, i) => ({ name: `d/f${String(i).padStart(2, '0')}`, data: fixtureBytes(500 + i, 100_000 + 7_919 * i) }))
    const { blob } = await buildBlob(files, { chunkSize: 65536 })
    const layerMiB = (blob.length / 2 ** 20).toFixed(1)
    const blobPath = join(work, 'layer.blob')
    await writeFile(blobPath, blob)
    const source = await FileSource.open(blobPath)
    cleanup.push(async () => { await source.close() })
    const es = await EstargzReader.open(async (o, l) => await source.read(o, l), blob.length)
    const warnings: string[] = []
    const logger = warningsLogger(warnings)
    // memory cache off, disk cap far above the disk: the disk fills before the cap is reached
    const cache = new ChunkCache({ logger }, { dir: join(fs.dir, 'chunks'), maxBytes: 1 << 30, memoryBytes: 0 })
    await cache.start()
    cleanup.push(async () => { await cache.stop() })
    // a filler, so space can be freed later without touching the cache's own files
    await writeFile(join(fs.dir, 'filler'), Buffer.alloc(64 << 10, 1)).catch(() => {})
    const reader = new ChunkReader({ source, cache, logger }, { readWindowBytes: 0 })

    let checked = 0
    const readAll = async (): Promise<void> => {
      for (const f of files) {
        const n = es.lookup(f.name)
        if (n == null) throw new Error(`missing ${f.name}`)
        // whole, then in 40 KiB pieces across chunk boundaries
        expect(Buffer.from(await reader.read(n, 0, f.data.length)).equals(f.data), f.name).toBe(true)
        for (let at = 0; at < f.data.length; at += 40_000) {
          const len = Math.min(40_000, f.data.length - at)
          expect(Buffer.from(await reader.read(n, at, len)).equals(f.data.subarray(at, at + len)), `${f.name}@${at}`).toBe(true)
        }
        checked += 2 * f.data.length
      }
    }
    await readAll()
    await cache.stop()
    const full = cache.stats()
    expect(full.writeFailures, 'writes refused by the full disk').toBeGreaterThan(0)
    expect(warnings.filter(w => w.includes('cannot write chunk')).length).toBe(full.writeFailures)
    expect(full.diskBytes).toBeLessThan(256 << 10)
    // Nothing half-written is left in tmp once the writes under way are done (stop() waits for
    // them; the cache stays usable: it reopens chunk files as needed).
    await cache.stop()
    expect(await readdir(join(fs.dir, 'chunks', 'tmp'))).toEqual([])

    // Space freed (the filler removed, the disk made bigger): the next writes succeed.
    await rm(join(fs.dir, 'filler'), { force: true })
    fs.remount('16m')
    await readAll()
    await cache.stop()
    const after = cache.stats()
    expect(after.writeFailures, 'no write failed once space was freed').toBe(full.writeFailures)
    expect(after.diskEntries).toBeGreaterThan(full.diskEntries)
    const chunks = files.reduce((n, f) => n + (es.lookup(f.name)?.chunks.length ?? 0), 0)
    expect(after.diskEntries, 'every chunk on disk now').toBe(chunks)
    // and a read now comes from the disk cache
    const hitsBefore = cache.stats().hits
    await reader.read(es.lookup(files[0].name) as NonNullable<ReturnType<EstargzReader['lookup']>>, 0, 1000)
    expect(cache.stats().hits).toBeGreaterThan(hitsBefore)
    await cache.stop()

    // The disk replaced by an empty one (the cache's directory, its tmp and every chunk gone
    // under it): reads stay right, the chunks are fetched and written again.
    fs.replace('16m')
    await readAll()
    await cache.stop()
    const replaced = cache.stats()
    expect(replaced.writeFailures, 'no write failed on the new disk').toBe(full.writeFailures)
    expect((await readdir(join(fs.dir, 'chunks'))).filter(n => n !== 'tmp').length, 'chunk directories written again').toBeGreaterThan(0)
    expect(replaced.diskEntries).toBe(chunks)
    record({ kind: 'fault', fault: `a full disk under the chunk cache (256 KiB tmpfs, a ${layerMiB} MiB layer), then space freed`, injected: full.writeFailures, survived: full.writeFailures, note: `every read right (${checked} bytes); ${full.writeFailures} chunk writes refused and counted; after freeing space all ${chunks} chunks were written, and again on an empty disk mounted in its place` })
    record({ kind: 'wrong-bytes', what: 'chunk reads over a full disk cache', bytesChecked: checked, wrong: 0 })
  }, 60_000)
})
