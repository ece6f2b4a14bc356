/**
 * Layer filesystem benchmark, side by side in one run:
 *  - sequential read (dd bs=1M) of a 256 MiB file through the FUSE mount, every chunk in the
 *    disk chunk cache and the kernel page cache cold (a fresh mount), vs the same file on the
 *    local disk (page cache warm, and O_DIRECT); plus the mount again with its page cache warm;
 *  - random 4 KiB reads through a fresh mount, chunks cached: p50/p99 (readahead off).
 * Readers are separate processes (dd, python3), as containers would be: a process must not
 * make synchronous reads of a FUSE mount it serves itself.
 *
 * usage: npx tsx scripts/bench/fs.ts [--size-mib 256] [--random 2000] [--keep]
 */
import '../../src/polyfill.js'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs, promisify } from 'node:util'
import { buildEstargzFile } from '../../src/estargz/index.js'
import { ChunkCache } from '../../src/fs/cache.js'
import { FuseMount } from '../../src/fs/fuse.js'
import { LayerFs } from '../../src/fs/layer.js'
import { silentLogger } from '../../src/logging.js'
import { FileSource } from '../../src/source/file.js'

const run = promisify(execFile)
const { values: args } = parseArgs({ options: { 'size-mib': { type: 'string', default: '256' }, random: { type: 'string', default: '2000' }, keep: { type: 'boolean', default: false } } })
const sizeMiB = Number(args['size-mib'])
const logger = silentLogger()

/** dd's own throughput figure for a whole-file read with 1 MiB blocks, in MB/s. */
async function ddMBps (path: string, flags: string[] = []): Promise<number> {
  const t0 = process.hrtime.bigint()
  await run('dd', [`if=${path}`, 'of=/dev/null', 'bs=1M', ...flags])
  const s = Number(process.hrtime.bigint() - t0) / 1e9
  return sizeMiB * 1048576 / 1e6 / s
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
    const fuseWarm = await ddMBps(join(seq.mnt, 'big.bin'))
    if (seq.fs.stats().bytesFetched !== 0) throw new Error('sequential read went to the source: the cache was not full')
    const { stdout: sums } = await run('sh', ['-c', 'sha256sum "$1" "$2" | cut -d" " -f1 | uniq | wc -l', 'sh', local, join(seq.mnt, 'big.bin')])
    if (sums.trim() !== '1') throw new Error('content through the mount differs from the local file')
    await ddMBps(local)
    const localWarm = await ddMBps(local)
    const localDirect = await ddMBps(local, ['iflag=direct'])

    const rows: Array<[string, string, string]> = [
      ['sequential 1 MiB reads, FUSE, chunks in disk cache, page cache cold', fuseCold.toFixed(0) + ' MB/s', ''],
      ['sequential 1 MiB reads, local disk, page cache warm', localWarm.toFixed(0) + ' MB/s', (fuseCold / localWarm).toFixed(2)],
      ['sequential 1 MiB reads, local disk, O_DIRECT', localDirect.toFixed(0) + ' MB/s', (fuseCold / localDirect).toFixed(2)],
      ['sequential 1 MiB reads, FUSE, page cache warm (kernel_cache)', fuseWarm.toFixed(0) + ' MB/s', (fuseWarm / localWarm).toFixed(2)],
      [`random 4 KiB reads (${n}), FUSE, chunks cached: p50 / p99`, `${p50.toFixed(3)} / ${p99.toFixed(3)} ms`, '']
    ]
    console.log(`\nlayer filesystem benchmark — ${sizeMiB} MiB file, node ${process.version}\n`)
    console.log('| case | figure | FUSE / local |')
    console.log('|---|---|---|')
    for (const r of rows) console.log(`| ${r.join(' | ')} |`)
    await source.close()
  } finally {
    for (const m of mounts) await m.unmount().catch(() => {})
    if (args.keep !== true) await rm(dir, { recursive: true, force: true })
  }
}

await main()
