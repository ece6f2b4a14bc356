/**
 * Load and soak (full run only: `npm run test:reliability`): real `ipfs-estargz mount` processes
 * (FUSE, the chunk reader, every chunk verified) over images pushed to a repo.
 *
 * - 64 concurrent readers on one mount, random files and ranges, every byte compared;
 * - 10 images mounted at once, every file of each read and compared;
 * - a soak (RELIABILITY_SOAK_SEC, 600 by default) of steady reads while the kernel's cached pages
 *   of the files are dropped now and then (`dd iflag=nocache`), so reads keep reaching the mount
 *   process: its RSS and open FDs must stay flat and the p99 read latency stable.
 *
 * The blocks are in the repo the mount reads (no peer; a repo per image, as a mount holds its
 * repo's lock): what is measured is the mount's own path.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdir, mkdtemp, open, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MediaType } from '../../src/oci/index.js'
import { blob, jsonBlob, tagged, writeLayout } from '../../scripts/fixtures/oci-image.js'
import { sha256 } from '../../scripts/fixtures/digest.js'
import { fixtureBytes, makeTar } from '../../scripts/fixtures/tar.js'
import { cliPath } from '../../scripts/fixtures/tools.js'
import { hasCommand, hasFuse, isRoot, needs } from '../helpers/env.js'
import { record } from './harness.js'

const SOAK_SEC = Number(process.env.RELIABILITY_SOAK_SEC ?? 600)
const IMAGES = 10
const READERS = 64

/** Files of image `i`: a few sizes, each spanning several chunks. */
function filesOf (i: number): Map<string, Buffer> {
  const m = new Map<string, Buffer>()
  for (let f = 0; f < 8; f++) m.set(`data/f${f}.bin`, fixtureBytes(i * 100 + f, (256 << 10) * (1 + f % 4) + 123 * f))
  m.set('etc/hello.txt', Buffer.from(`hello from image ${i}\n`))
  return m
}

function cli (args: string[]): { code: number, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 })
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr }
}

async function startMount (args: string[]): Promise<ChildProcess> {
  const child = spawn(process.execPath, [cliPath, 'mount', ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
  let err = ''
  await new Promise<void>((resolve, reject) => {
    child.stderr?.setEncoding('utf8').on('data', (s: string) => {
      err = (err + s).slice(-20_000)
      if (err.includes(' mounted at ')) resolve()
    })
    child.on('exit', (code) => reject(new Error(`mount exited (${String(code)}) before mounting: ${err}`)))
  })
  return child
}

/** RSS (bytes) and open FDs of a process. */
async function usage (pid: number): Promise<{ rss: number, fds: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const rss = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024
  const fds = (await readdir(`/proc/${pid}/fd`)).length
  return { rss, fds }
}

function p99 (xs: number[]): number {
  if (xs.length === 0) return 0
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(s.length * 0.99))]
}

/** Reads `length` bytes at `offset` of a file through the kernel (a fresh open each time: a FUSE lookup too). */
async function readRange (path: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(path, 'r')
  try {
    const buf = Buffer.alloc(length)
    let got = 0
    while (got < length) {
      const { bytesRead } = await fh.read(buf, got, length - got, offset + got)
      if (bytesRead === 0) break
      got += bytesRead
    }
    return buf.subarray(0, got)
  } finally {
    await fh.close()
  }
}

/** Drops the page cache of one file (posix_fadvise DONTNEED through dd), so its next reads reach the mount. */
function dropCache (path: string): void {
  spawnSync('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none'])
}

describe.skipIf(needs({ root: isRoot, fuse: hasFuse, fusermount: hasCommand('fusermount') }))('load and soak on real mounts', () => {
  let dir: string
  const cids: string[] = []
  const files: Array<Map<string, Buffer>> = []
  const running: Array<{ child: ChildProcess, mountpoint: string }> = []

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reliability-load-'))
    for (let i = 0; i < IMAGES; i++) {
      const f = filesOf(i)
      files.push(f)
      const tar = makeTar([...f].map(([name, data]) => ({ name, data })))
      const layer = blob(MediaType.OciLayerGzip, gzipSync(tar))
      const config = jsonBlob(MediaType.OciConfig, { architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [sha256(tar)] } })
      const manifest = jsonBlob(MediaType.OciManifest, { schemaVersion: 2, mediaType: MediaType.OciManifest, config: config.descriptor, layers: [layer.descriptor] })
      await writeLayout(join(dir, `img${i}`), [layer, config, manifest], [tagged(manifest.descriptor, 'latest')])
      // a repo per image: a mount holds its repo's lock
      const push = cli(['push', `oci:${join(dir, `img${i}`)}`, '--repo', join(dir, `repo${i}`), '--level', '1'])
      if (push.code !== 0) throw new Error(push.stderr)
      cids.push(push.stdout.trim())
    }
  }, 900_000)

  afterAll(async () => {
    for (const { child, mountpoint } of running) {
      if (child.exitCode == null && child.signalCode == null) {
        const exited = new Promise(resolve => child.once('exit', resolve))
        child.kill('SIGTERM')
        await exited
      }
      spawnSync('umount', ['-l', mountpoint])
    }
    await rm(dir, { recursive: true, force: true })
  })

  async function mount (i: number): Promise<{ child: ChildProcess, mnt: string }> {
    const mnt = join(dir, `mnt${i}`)
    await mkdir(mnt, { recursive: true })
    const child = await startMount([cids[i], mnt, '--repo', join(dir, `repo${i}`), '--log-level', 'warn', '--no-background-fetch'])
    running.push({ child, mountpoint: mnt })
    return { child, mnt }
  }

  it(`${READERS} concurrent readers on one mount: every byte right`, async () => {
    const { child, mnt } = await mount(0)
    const names = [...files[0].keys()]
    const before = await usage(child.pid as number)
    const t0 = Date.now()
    const latencies: number[] = []
    let checked = 0
    let wrong = 0
    let rounds = 0
    await Promise.all(Array.from({ length: READERS }, async (_, r) => {
      for (let k = 0; k < 30; k++) {
        const name = names[(r + k) % names.length]
        const want = files[0].get(name) as Buffer
        const offset = Math.floor(Math.random() * want.length)
        const length = Math.min(want.length - offset, 1 + Math.floor(Math.random() * (256 << 10)))
        if (k % 10 === 0) dropCache(join(mnt, name))
        const s = performance.now()
        const got = await readRange(join(mnt, name), offset, length)
        latencies.push(performance.now() - s)
        checked += got.length
        if (!got.equals(want.subarray(offset, offset + length))) wrong++
        rounds++
      }
    }))
    const after = await usage(child.pid as number)
    const seconds = (Date.now() - t0) / 1000
    record({ kind: 'load', load: `${READERS} concurrent readers on one mount`, held: `${rounds} reads, ${(checked / 2 ** 20).toFixed(0)} MiB`, seconds, rssDriftMiB: (after.rss - before.rss) / 2 ** 20, fdDrift: after.fds - before.fds, p99Ms: p99(latencies), p99LastMs: p99(latencies.slice(-READERS * 5)) })
    record({ kind: 'wrong-bytes', what: `${READERS} readers on one mount`, bytesChecked: checked, wrong })
    expect(wrong).toBe(0)
  })

  it(`${IMAGES} images mounted at once: every file of each right`, async () => {
    const t0 = Date.now()
    const mounts = [running.find(r => r.mountpoint === join(dir, 'mnt0'))?.mountpoint ?? (await mount(0)).mnt]
    for (let i = 1; i < IMAGES; i++) mounts.push((await mount(i)).mnt)
    let checked = 0
    let wrong = 0
    await Promise.all(mounts.map(async (mnt, i) => {
      for (const [name, want] of files[i]) {
        const got = await readFile(join(mnt, name))
        checked += got.length
        if (!got.equals(want)) wrong++
      }
    }))
    const mounted = spawnSync('sh', ['-c', `grep -c ' ${dir}/mnt' /proc/self/mountinfo`], { encoding: 'utf8' }).stdout.trim()
    record({ kind: 'load', load: `${IMAGES} images mounted at once`, held: `${mounted} mounts, every file read`, seconds: (Date.now() - t0) / 1000 })
    record({ kind: 'wrong-bytes', what: `${IMAGES} images mounted at once`, bytesChecked: checked, wrong })
    expect(Number(mounted)).toBeGreaterThanOrEqual(IMAGES)
    expect(wrong).toBe(0)
  })

  it(`soak: ${SOAK_SEC} s of steady reads; RSS and FDs flat, p99 stable`, async () => {
    const mine = running.find(r => r.mountpoint === join(dir, 'mnt0')) as { child: ChildProcess, mountpoint: string }
    const pid = mine.child.pid as number
    const mnt = mine.mountpoint
    const names = [...files[0].keys()]
    const windows: Array<{ p99: number, rss: number, fds: number, reads: number }> = []
    let lat: number[] = []
    let checked = 0
    let wrong = 0
    const end = Date.now() + SOAK_SEC * 1000
    const windowMs = Math.max(5_000, Math.min(30_000, SOAK_SEC * 1000 / 20))
    let nextWindow = Date.now() + windowMs
    const sampler = (async () => {
      while (Date.now() < end) {
        await new Promise(resolve => setTimeout(resolve, Math.max(0, nextWindow - Date.now())))
        nextWindow += windowMs
        const u = await usage(pid)
        windows.push({ p99: p99(lat), rss: u.rss, fds: u.fds, reads: lat.length })
        lat = []
      }
    })()
    await Promise.all(Array.from({ length: 8 }, async (_, r) => {
      let k = 0
      while (Date.now() < end) {
        const name = names[(r + k++) % names.length]
        const want = files[0].get(name) as Buffer
        if (k % 4 === 0) dropCache(join(mnt, name))
        const offset = Math.floor(Math.random() * want.length)
        const length = Math.min(want.length - offset, 4096 + Math.floor(Math.random() * (128 << 10)))
        const s = performance.now()
        const got = await readRange(join(mnt, name), offset, length)
        lat.push(performance.now() - s)
        checked += got.length
        if (!got.equals(want.subarray(offset, offset + length))) wrong++
        await new Promise(resolve => setTimeout(resolve, 5)) // steady, not flat out
      }
    }))
    await sampler
    // the first window warms up (caches fill); drift is measured from the second
    const base = windows[Math.min(1, windows.length - 1)]
    const last = windows[windows.length - 1]
    const rssDriftMiB = (last.rss - base.rss) / 2 ** 20
    const fdDrift = last.fds - base.fds
    const reads = windows.reduce((s, w) => s + w.reads, 0)
    record({ kind: 'load', load: 'soak: 8 readers, steady, page cache dropped now and then', held: `${reads} reads, ${(checked / 2 ** 20).toFixed(0)} MiB, ${windows.length} windows of ${windowMs / 1000} s`, seconds: SOAK_SEC, rssDriftMiB, fdDrift, p99Ms: base.p99, p99LastMs: last.p99, note: `RSS ${(base.rss / 2 ** 20).toFixed(0)} → ${(last.rss / 2 ** 20).toFixed(0)} MiB (max ${(Math.max(...windows.map(w => w.rss)) / 2 ** 20).toFixed(0)}); FDs ${base.fds} → ${last.fds}; p99 max ${Math.max(...windows.map(w => w.p99)).toFixed(1)} ms` })
    record({ kind: 'wrong-bytes', what: 'soak reads', bytesChecked: checked, wrong })
    expect(wrong).toBe(0)
    expect(fdDrift).toBeLessThanOrEqual(8)
    expect(rssDriftMiB).toBeLessThan(64)
    // stable: the last window's p99 within 5× the first's (plus 100 ms of slack: a shared, loaded machine)
    expect(last.p99).toBeLessThan(5 * base.p99 + 100)
  })
})
