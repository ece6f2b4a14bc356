import { open, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { constants } from 'node:os'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildEstargzFile } from '../../src/estargz/index.js'
import { DEFAULTS } from '../../src/fs/config.js'
import { FuseMount } from '../../src/fs/fuse.js'
import { LayerFs } from '../../src/fs/layer.js'
import { silentLogger } from '../../src/logging.js'
import { FileSource } from '../../src/source/file.js'
import { hasCommand, hasFuse, isRoot, needs } from '../helpers/env.js'
import { SMALL_CHUNK } from '../helpers/fixtures.js'
import { fixtureBytes, makeTar } from '../../scripts/fixtures/tar.js'
import { removeDir, run, tempDir } from './helpers.js'

/**
 * What a reader sees over a chunk that fails verification.
 *
 * The kernel reads a regular file through the page cache: readahead asks for 128 KiB requests,
 * a failed request leaves its pages not up to date, and the kernel retries them one page at a
 * time; a read() spanning good pages and then a failed one returns the good bytes as a short
 * count. Some readers take a short read of a regular file as its end: Node's
 * `fs.promises.readFile` of a file up to 512 KiB (one read of st_size bytes), or of any size
 * with an encoding (512 KiB steps). So every read request first verifies every chunk of the
 * aligned 512 KiB window around it (`readWindowBytes`): a bad chunk fails every request in its
 * window, no page of that window ever reaches the page cache, and a read() starting in it gets
 * EIO before any byte. Readers that stop at a short count therefore never stop inside a bad
 * window. Never a wrong byte, and for files up to the window size never a short read.
 *
 * Every read of the mount here is async or in a child process: this process serves the mount.
 */

const logger = silentLogger()
const BIG = fixtureBytes(4, 5 * SMALL_CHUNK + 12345) // 340,025 bytes, as in the issue
const HUGE = fixtureBytes(5, 12 * SMALL_CHUNK + 100) // over Node's 512 KiB readFile step
const BAD_CHUNK = 2 // the chunk at file offset 131,072 fails verification
const BAD = BAD_CHUNK * SMALL_CHUNK
const WINDOW = DEFAULTS.readWindowBytes // 512 KiB: BIG lies in one window, HUGE in two

/** One positioned read (a single pread64): its count, or the error code. */
async function readAt (path: string, offset: number, length: number): Promise<{ bytes: Buffer } | { code: string }> {
  const fh = await open(path, 'r')
  try {
    const buf = Buffer.alloc(length)
    const { bytesRead } = await fh.read(buf, 0, length, offset)
    return { bytes: buf.subarray(0, bytesRead) }
  } catch (err) {
    return { code: (err as NodeJS.ErrnoException).code ?? String(err) }
  } finally {
    await fh.close()
  }
}

/** Runs `fs.promises.readFile` / `readFileSync` in another node process, as the issue did. */
async function readInChild (path: string, how: 'async' | 'async-latin1' | 'sync'): Promise<{ length: number, sha?: string, code?: string }> {
  const script = `
    import { readFile } from 'node:fs/promises'
    import { readFileSync } from 'node:fs'
    import { createHash } from 'node:crypto'
    const [path, how] = process.argv.slice(1)
    try {
      const b = how === 'sync' ? readFileSync(path) : how === 'async' ? await readFile(path) : Buffer.from(await readFile(path, 'latin1'), 'latin1')
      console.log(JSON.stringify({ length: b.length, sha: createHash('sha256').update(b).digest('hex') }))
    } catch (err) { console.log(JSON.stringify({ length: -1, code: err.code })) }`
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script, path, how])
  return JSON.parse(stdout) as { length: number, sha?: string, code?: string }
}


describe.skipIf(needs({ root: isRoot, fuse: hasFuse, fusermount: hasCommand('fusermount') }))('short reads over a chunk that fails verification', () => {
  let dir: string
  let mnt: string
  let fs: LayerFs
  let mount: FuseMount
  let source: FileSource

  beforeAll(async () => {
    dir = await tempDir('short-read')
    const tar = join(dir, 'layer.tar')
    await writeFile(tar, makeTar([{ name: 'big.bin', data: BIG }, { name: 'huge.bin', data: HUGE }]))
    const good = join(dir, 'good.esgz')
    const { tocDigest } = await buildEstargzFile(tar, good, { chunkSize: SMALL_CHUNK })
    // Corrupt the compressed bytes of chunk 2 of both files in the blob itself (the TOC, kept
    // elsewhere in the blob, still verifies): "corrupted at the source".
    const probeSource = await FileSource.open(good)
    const probe = await LayerFs.open({ source: probeSource, logger }, { tocDigest })
    const blob = await readFile(good)
    for (const name of ['big.bin', 'huge.bin']) {
      const chunk = probe.estargz.lookup(name)?.chunks[BAD_CHUNK]
      expect(chunk?.chunkOffset).toBe(BAD)
      const c = chunk as NonNullable<typeof chunk>
      for (let i = c.offset + 12; i < c.offset + 40; i++) blob[i] ^= 0x5a
    }
    await probeSource.close()
    const bad = join(dir, 'bad.esgz')
    await writeFile(bad, blob)
    source = await FileSource.open(bad)
    fs = await LayerFs.open({ source, logger }, { tocDigest, backgroundFetch: false })
    await fs.start()
    mnt = join(dir, 'mnt')
    mount = new FuseMount({ fs, logger }, mnt)
    await mount.mount()
  })

  afterAll(async () => {
    await mount?.unmount().catch(() => {})
    await fs?.stop().catch(() => {})
    await source?.close()
    await removeDir(dir)
  })

  it('every read() that starts in the bad chunk\'s window fails with EIO, from any offset and of any length', async () => {
    expect(BIG.length).toBeLessThan(WINDOW)
    expect(HUGE.length).toBeGreaterThan(WINDOW)
    for (const [name, want] of [['big.bin', BIG], ['huge.bin', HUGE]] as const) {
      const inWindow = Math.min(want.length, WINDOW)
      for (const [start, length] of [[0, want.length], [0, 4096], [SMALL_CHUNK + 100, want.length], [BAD, 4096], [BAD + 5000, 100],
        [BAD + SMALL_CHUNK, SMALL_CHUNK], [inWindow - 1, 1]]) {
        expect(await readAt(join(mnt, name), start, length), `${name}@${start}+${length}`).toEqual({ code: 'EIO' })
      }
    }
    expect(fs.stats().verificationFailures).toBeGreaterThan(0)
  })

  it('the window after the bad one reads correctly', async () => {
    const r = await readAt(join(mnt, 'huge.bin'), WINDOW, HUGE.length - WINDOW)
    expect('bytes' in r && r.bytes.equals(HUGE.subarray(WINDOW))).toBe(true)
  })

  it('cat, dd and Python read() fail with EIO and print no byte of the file', async () => {
    const cat = await run('cat', [join(mnt, 'big.bin')], { encoding: 'buffer', maxBuffer: 1 << 24 }).then(() => undefined, (e: { stderr: Buffer, stdout: Buffer }) => e)
    expect(cat?.stderr.toString()).toMatch(/Input\/output error/)
    expect(cat?.stdout.length).toBe(0)
    for (const name of ['big.bin', 'huge.bin']) {
      const dd = await run('dd', [`if=${join(mnt, name)}`, 'of=/dev/null', 'bs=1M'], { encoding: 'utf8' }).then(() => undefined, (e: { stderr: string }) => e)
      expect(dd?.stderr, `dd ${name}`).toMatch(/Input\/output error/)
      const py = await run('python3', ['-c', 'import sys\ntry:\n  open(sys.argv[1], "rb").read()\n  print("read")\nexcept OSError as e:\n  print(e.errno)', join(mnt, name)], { encoding: 'utf8' })
      expect(py.stdout.trim(), `python ${name}`).toBe(String(constants.errno.EIO))
    }
  })

  it('an mmap reader of the bad window gets SIGBUS, never a wrong byte', async () => {
    const script = 'import mmap, sys\nf = open(sys.argv[1], "rb")\nm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\nsys.stdout.write(str(sum(m[0:4096])))\n'
    const r = await run('python3', ['-c', script, join(mnt, 'big.bin')], { encoding: 'utf8' }).then(() => ({ signal: null as string | null, stdout: '' }), (e: { signal: string | null, stdout: string }) => e)
    expect(r.signal).toBe('SIGBUS')
    expect(r.stdout).toBe('')
  })

  it('Node readFile in another process (async, with an encoding, sync) rejects with EIO', async () => {
    for (const name of ['big.bin', 'huge.bin']) {
      for (const how of ['async', 'async-latin1', 'sync'] as const) {
        const r = await readInChild(join(mnt, name), how)
        expect(r, `${name} ${how}`).toEqual({ length: -1, code: 'EIO' })
      }
    }
  })
})
