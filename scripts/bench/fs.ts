/**
 * Layer filesystem benchmark, side by side in one run:
 *  - sequential read (dd bs=1M) of a 256 MiB file through the FUSE mount, every chunk in the
 *    disk chunk cache and the kernel page cache cold (a fresh mount), vs the same file on the
 *    local disk (page cache warm, and O_DIRECT); plus the mount again with its page cache warm;
 *  - random 4 KiB reads through a fresh mount, chunks cached: p50/p99 (readahead off);
 *  - first reads of uncached 4 KiB ranges of the layer from another Helia node over loopback
 *    (its blocks on node A, read through an IpfsSource on node B, connected): p50/p99, two rows:
 *    bitswap only, and our block exchange (`/ipfs-estargz/blocks/1.0.0`) first. Each row has a
 *    fresh node B and its own leaves, so nothing it reads is cached. Beside them, the floor under
 *    both (1 MiB answers on an open stream of the same libp2p stack, no disk, no hashing) and the
 *    FUSE manager → daemon hop (the blob API over the control socket, bytes from memory).
 * Readers are separate processes (dd, python3), as containers would be: a process must not
 * make synchronous reads of a FUSE mount it serves itself.
 *
 * usage: npx tsx scripts/bench/fs.ts [--size-mib 256] [--random 2000] [--remote 100] [--remote-only] [--keep]
 */
import '../../src/polyfill.js'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs, promisify } from 'node:util'
import { EstargzReader, buildEstargz, buildEstargzFile } from '../../src/estargz/index.js'
import { ChunkCache } from '../../src/fs/cache.js'
import { FuseMount } from '../../src/fs/fuse.js'
import { LayerFs } from '../../src/fs/layer.js'
import { silentLogger } from '../../src/logging.js'
import { FileSource } from '../../src/source/file.js'
import { IpfsSource } from '../../src/source/ipfs.js'
import { createNode, importSegments, importStream, type IpfsNode } from '../../src/ipfs/index.js'
import { BlobReader } from '../../src/daemon/blob-api.js'
import { ControlServer } from '../../src/daemon/control.js'
import { BlobClient } from '../../src/fusemgr/blob-source.js'
import { lpStream } from '@libp2p/utils'
import { createReadStream } from 'node:fs'

const run = promisify(execFile)
const { values: args } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '256' },
    random: { type: 'string', default: '2000' },
    /** Remote first reads per row (each in its own 1 MiB leaf; at most half the leaves). */
    remote: { type: 'string', default: '100' },
    /** Only the remote rows (no FUSE mounts). */
    'remote-only': { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false }
  }
})
const sizeMiB = Number(args['size-mib'])
const logger = silentLogger()

/** dd's own throughput figure for a whole-file read with 1 MiB blocks, in MB/s. */
/**
 * MB/s of one `dd` pass, by dd's own clock: a warm 256 MiB read takes ~20-40 ms, so timing the
 * process from here would mostly measure spawning it.
 */
async function ddOnce (path: string, flags: string[] = []): Promise<number> {
  const { stderr } = await run('dd', [`if=${path}`, 'of=/dev/null', 'bs=1M', ...flags])
  const m = /copied, ([\d.]+) s/.exec(stderr)
  if (m == null) throw new Error(`cannot read dd's timing: ${stderr}`)
  return sizeMiB * 1048576 / 1e6 / Number(m[1])
}

/** Median of `passes` dd passes (1 for a cold read: a second pass would be warm). */
async function ddMBps (path: string, flags: string[] = [], passes = 1): Promise<number> {
  const xs: number[] = []
  for (let i = 0; i < passes; i++) xs.push(await ddOnce(path, flags))
  return xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]
}

const RANDOM_PY = `
import os, sys, time, random
path, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
rnd = random.Random(42)
lat = []
for _ in range(n):
    off = rnd.randrange(0, size // 4096) * 4096
    t = time.perf_counter_ns()
    b = os.pread(fd, 4096, off)
    lat.append(time.perf_counter_ns() - t)
    assert len(b) == 4096
lat.sort()
print(lat[len(lat) // 2] / 1e6, lat[int(len(lat) * 0.99)] / 1e6)
`

/** The FUSE rows: sequential and random reads through mounts of the layer, chunks in the disk cache. */
async function fuseRows (dir: string, local: string, tocDigest: string, mounts: FuseMount[]): Promise<Array<[string, string, string]>> {
  const source = await FileSource.open(join(dir, 'layer.esgz'))
  const cache = new ChunkCache({ logger }, { dir: join(dir, 'cache') })
  await cache.start()

  const mountFresh = async (name: string, background: boolean): Promise<{ fs: LayerFs, mnt: string }> => {
    const fs = await LayerFs.open({ source, cache, logger }, { tocDigest, backgroundFetch: background, backgroundQuietMs: 0 })
    await fs.start()
    const mnt = join(dir, name)
    const m = new FuseMount({ fs, logger }, mnt)
    await m.mount()
    mounts.push(m)
    return { fs, mnt }
  }

  // Fill the disk cache through a background fetch, as a mount does on its own.
  process.stderr.write('filling the chunk cache (background fetch)...\n')
  const first = await mountFresh('m0', true)
  await first.fs.prefetcher.done()
  if (!first.fs.stats().prefetch.complete) throw new Error('background fetch did not complete')

  const rnd = await mountFresh('m1', false)
  const n = Number(args.random)
  const { stdout } = await run('python3', ['-c', RANDOM_PY, join(rnd.mnt, 'big.bin'), String(n), String(sizeMiB << 20)])
  const [p50, p99] = stdout.trim().split(' ').map(Number)
  if (rnd.fs.stats().bytesFetched !== 0) throw new Error('random reads went to the source: the cache was not full')

  const seq = await mountFresh('m2', false)
  const fuseCold = await ddMBps(join(seq.mnt, 'big.bin'))
  const fuseWarm = await ddMBps(join(seq.mnt, 'big.bin'), [], 5)
  if (seq.fs.stats().bytesFetched !== 0) throw new Error('sequential read went to the source: the cache was not full')
  const { stdout: sums } = await run('sh', ['-c', 'sha256sum "$1" "$2" | cut -d" " -f1 | uniq | wc -l', 'sh', local, join(seq.mnt, 'big.bin')])
  if (sums.trim() !== '1') throw new Error('content through the mount differs from the local file')
  await ddMBps(local)
  const localWarm = await ddMBps(local, [], 5)
  const localDirect = await ddMBps(local, ['iflag=direct'], 3)

  await source.close()
  return [
    ['sequential 1 MiB reads, FUSE, chunks in disk cache, page cache cold', fuseCold.toFixed(0) + ' MB/s', ''],
    ['sequential 1 MiB reads, local disk, page cache warm', localWarm.toFixed(0) + ' MB/s', (fuseCold / localWarm).toFixed(2)],
    ['sequential 1 MiB reads, local disk, O_DIRECT', localDirect.toFixed(0) + ' MB/s', (fuseCold / localDirect).toFixed(2)],
    ['sequential 1 MiB reads, FUSE, page cache warm (kernel_cache)', fuseWarm.toFixed(0) + ' MB/s', (fuseWarm / localWarm).toFixed(2)],
    [`random 4 KiB reads (${n}), FUSE, chunks cached: p50 / p99`, `${p50.toFixed(3)} / ${p99.toFixed(3)} ms`, '']
  ]
}

/**
 * What moving a 1 MiB leaf between two of our nodes costs at least: answers of that size on one
 * open stream of the same libp2p stack, nothing read from disk, nothing hashed.
 */
async function transportFloor (nodeA: IpfsNode, repo: string, n: number): Promise<number[]> {
  const answer = Buffer.concat([Uint8Array.of(1), randomBytes(1 << 20)])
  await nodeA.helia.libp2p.handle('/ipfs-estargz/bench-floor/1', async (stream) => {
    const lp = lpStream(stream, { maxBufferSize: 4 << 20 })
    try { for (;;) { await lp.read(); await lp.write(answer) } } catch {}
  })
  const nodeB = await createNode({ repo, logger, exchange: false })
  const lat: number[] = []
  try {
    await nodeB.dial(nodeA.multiaddrs()[0])
    const lp = lpStream(await nodeB.helia.libp2p.dialProtocol(nodeA.peerId, '/ipfs-estargz/bench-floor/1'), { maxDataLength: 2 << 20, maxBufferSize: 4 << 20 })
    for (let i = 0; i < n + 5; i++) {
      const t0 = process.hrtime.bigint()
      await lp.write(randomBytes(36))
      if ((await lp.read()).byteLength !== answer.length) throw new Error('short floor answer')
      if (i >= 5) lat.push(Number(process.hrtime.bigint() - t0) / 1e6)
    }
  } finally {
    await nodeB.stop()
    await nodeA.helia.libp2p.unhandle('/ipfs-estargz/bench-floor/1')
  }
  return lat.sort((a, b) => a - b)
}

/** The FUSE manager's way to the bytes, alone: BlobClient → daemon blob API, source in memory. */
async function blobApiHop (dir: string, n: number): Promise<{ small: number[], large: number[] }> {
  const blob = randomBytes(64 << 20)
  const blobs = new BlobReader({ logger, openSource: async () => ({ size: async () => blob.length, read: async (o, l) => blob.subarray(o, o + l) }) })
  const server = new ControlServer({ logger, blobs, run: async () => 0 }, { address: join(dir, 'api.sock'), repo: dir })
  await server.start()
  const client = new BlobClient()
  client.attach(join(dir, 'api.sock'))
  const source = client.source('bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy')
  const run = async (len: number): Promise<number[]> => {
    const lat: number[] = []
    for (let i = 0; i < n + 5; i++) {
      const at = Math.floor(Math.random() * (blob.length - len))
      const t0 = process.hrtime.bigint()
      if ((await source.read(at, len)).length !== len) throw new Error('short blob API read')
      if (i >= 5) lat.push(Number(process.hrtime.bigint() - t0) / 1e6)
    }
    return lat.sort((a, b) => a - b)
  }
  try {
    return { small: await run(4096), large: await run(1 << 20) }
  } finally {
    client.close()
    await server.stop()
  }
}

async function main (): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'ipfs-estargz-bench-fs-'))
  const mounts: FuseMount[] = []
  try {
    // Input: incompressible data (the worst case for the cache: chunk = compressed size).
    const src = join(dir, 'src')
    await mkdir(src)
    const local = join(src, 'big.bin')
    const fh = await open(local, 'w')
    for (let i = 0; i < sizeMiB; i++) await fh.write(randomBytes(1 << 20))
    await fh.close()
    await run('tar', ['-C', src, '-cf', join(dir, 'layer.tar'), 'big.bin'])
    process.stderr.write('building the layer...\n')
    const { tocDigest } = await buildEstargzFile(join(dir, 'layer.tar'), join(dir, 'layer.esgz'), { compressionLevel: 1 })
    const rows: Array<[string, string, string]> = []
    const pct = (xs: number[], p: number): number => xs[Math.min(xs.length - 1, Math.floor(xs.length * p))]
    if (args['remote-only'] !== true) rows.push(...await fuseRows(dir, local, tocDigest, mounts))

    // Remote: the layer's blocks on node A; a fresh node B per row, connected to A, reads 4 KiB
    // ranges it has never seen (each in a different 1 MiB leaf), as a lazy mount's first reads do.
    process.stderr.write('remote reads from a second Helia node...\n')
    const nodeA = await createNode({ repo: join(dir, 'a'), listen: ['/ip4/127.0.0.1/tcp/0'], logger })
    try {
      const { cid } = await importStream(nodeA.localBlockstore, createReadStream(join(dir, 'layer.esgz'), { highWaterMark: 1 << 20 }))
      const size = (await (await IpfsSource.open(nodeA.blocks, cid, { offline: true })).size())
      const leaves = Math.floor(size / (1 << 20))
      const perRow = Math.min(Number(args.remote), Math.floor(leaves / 2))
      const order = [...Array(leaves).keys()].sort(() => Math.random() - 0.5)
      const remoteRow = async (name: string, useExchange: boolean, picks: number[]): Promise<number[]> => {
        const nodeB = await createNode({ repo: join(dir, name), logger, exchange: useExchange ? undefined : false })
        const lat: number[] = []
        try {
          await nodeB.dial(nodeA.multiaddrs()[0])
          if (useExchange) {
            for (let i = 0; i < 500 && nodeB.exchange.peers().length === 0; i++) await new Promise(resolve => setTimeout(resolve, 10))
            if (nodeB.exchange.peers().length === 0) throw new Error('node A never announced the block exchange')
          }
          const src = await IpfsSource.open(nodeB.blocks, cid)
          for (const leaf of picks) {
            const t0 = process.hrtime.bigint()
            const bytes = await src.read(leaf * (1 << 20) + 12_345, 4096)
            lat.push(Number(process.hrtime.bigint() - t0) / 1e6)
            if (bytes.length !== 4096) throw new Error('short remote read')
          }
          const stages = nodeB.fetchStats()
          if (useExchange && (stages.exchangeBlocks < picks.length || stages.bitswapBlocks > 0)) throw new Error('the block exchange row fell back to bitswap')
          if (!useExchange && stages.bitswapBlocks < picks.length) throw new Error('the bitswap row did not use bitswap')
          if (src.stats().networkBlocks < picks.length) throw new Error('remote reads were served locally')
        } finally {
          await nodeB.stop()
        }
        return lat.sort((a, b) => a - b)
      }
      // Small files, as a container's start-up reads them. Push gathers small members into leaves
      // of ~16 KiB (member-aligned layout), so only every 8th file (~33 KiB apart, incompressible)
      // is read: each read then moves one small leaf that no earlier read brought.
      const smallDir = join(dir, 'small')
      await mkdir(smallDir)
      const spacing = 8
      const names = Array.from({ length: spacing * perRow }, (_, i) => `f${String(i).padStart(5, '0')}`)
      for (const n of names) { const f = await open(join(smallDir, n), 'w'); await f.write(randomBytes(4096)); await f.close() }
      await run('tar', ['-C', smallDir, '-cf', join(dir, 'small.tar'), ...names])
      // Imported member-aligned, as push does: each gzip member starts a leaf of its own.
      const small = await importSegments(nodeA.localBlockstore, async (sink) => await buildEstargz(createReadStream(join(dir, 'small.tar')), sink, { compressionLevel: 1 }))
      const smallSrc = await IpfsSource.open(nodeA.blocks, small.cid, { offline: true })
      const smallToc = await EstargzReader.open(async (o, l) => await smallSrc.read(o, l), await smallSrc.size())
      const ranges = names.map(n => smallToc.lookup(n)?.chunks[0]).map(c => ({ offset: c?.offset ?? 0, length: (c?.compressedEnd ?? 0) - (c?.offset ?? 0) }))
      const smallRow = async (name: string, picks: Array<{ offset: number, length: number }>): Promise<number[]> => {
        const nodeB = await createNode({ repo: join(dir, name), logger })
        const lat: number[] = []
        try {
          await nodeB.dial(nodeA.multiaddrs()[0])
          for (let i = 0; i < 500 && nodeB.exchange.peers().length === 0; i++) await new Promise(resolve => setTimeout(resolve, 10))
          const src = await IpfsSource.open(nodeB.blocks, small.cid)
          for (const r of picks) {
            const t0 = process.hrtime.bigint()
            const bytes = await src.read(r.offset, r.length)
            lat.push(Number(process.hrtime.bigint() - t0) / 1e6)
            if (bytes.length !== r.length) throw new Error('short remote read')
          }
          if (nodeB.fetchStats().bitswapBlocks > 0) throw new Error('the small-file row fell back to bitswap')
          if (src.stats().networkBlocks < picks.length) throw new Error('small-file reads were served from leaves fetched before')
        } finally {
          await nodeB.stop()
        }
        return lat.sort((a, b) => a - b)
      }
      const viaSmall = await smallRow('b-small', ranges.filter((_, i) => i % spacing === 0))
      const viaBitswap = await remoteRow('b-bitswap', false, order.slice(0, perRow))
      const viaExchange = await remoteRow('b-exchange', true, order.slice(perRow, 2 * perRow))
      const floor = await transportFloor(nodeA, join(dir, 'b-floor'), perRow)
      const fmt = (xs: number[]): string => `${pct(xs, 0.5).toFixed(1)} / ${pct(xs, 0.99).toFixed(1)} ms`
      const hop = await blobApiHop(dir, perRow)
      rows.push(
        [`first read of an uncached 4 KiB range, blocks on a connected Helia peer, bitswap only (${viaBitswap.length} reads): p50 / p99`, fmt(viaBitswap), ''],
        [`same, block exchange \`/ipfs-estargz/blocks/1.0.0\` first (${viaExchange.length} reads): p50 / p99`, fmt(viaExchange), ''],
        [`first read of an uncached 4 KiB file (its own small leaf), block exchange (${viaSmall.length} reads): p50 / p99`, fmt(viaSmall), ''],
        [`floor: a 1 MiB answer on an open libp2p stream (noise, yamux, TCP; no disk, no hashing) (${floor.length}): p50 / p99`, fmt(floor), ''],
        [`FUSE manager → daemon hop (blob API over the control socket, bytes from memory), 4 KiB / 1 MiB ranges: p50 / p99`, `${fmt(hop.small)}; ${fmt(hop.large)}`, '']
      )
    } finally {
      await nodeA.stop()
    }
    console.log(`\nlayer filesystem benchmark — ${sizeMiB} MiB file, node ${process.version}\n`)
    console.log('| case | figure | FUSE / local |')
    console.log('|---|---|---|')
    for (const r of rows) console.log(`| ${r.join(' | ')} |`)
  } finally {
    for (const m of mounts) await m.unmount().catch(() => {})
    if (args.keep !== true) await rm(dir, { recursive: true, force: true })
  }
}

await main()
