import { createHash } from 'node:crypto'
import { open, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildEstargzFile } from '../../src/estargz/index.js'
import { FuseMount } from '../../src/fs/fuse.js'
import { LayerFs } from '../../src/fs/layer.js'
import { silentLogger } from '../../src/logging.js'
import { FileSource } from '../../src/source/file.js'
import { hasCommand, hasFuse, isRoot, needs } from '../helpers/env.js'
import { SMALL_CHUNK } from '../helpers/fixtures.js'
import { fixtureBytes, makeTar } from '../helpers/tar.js'
import { removeDir, run, tempDir } from './helpers.js'

/**
 * What a reader sees over a chunk that fails verification (issue 4).
 *
 * The read handler fails the whole FUSE READ request with EIO, never partial data. The kernel
 * reads a regular file through the page cache: readahead asks for 128 KiB requests, a failed
 * request leaves its pages not up to date, and the kernel then retries those pages one 4 KiB
 * READ at a time. So a read() spanning the bad chunk copies the good pages before it and
 * returns that short count (POSIX: the bytes transferred before the error); the next read(),
 * which starts at the bad chunk, gets EIO. Never a wrong byte.
 *
 * Node's `fs.promises.readFile` treats a short read of a regular file no bigger than 512 KiB
 * (one read of st_size bytes) as end of file and resolves with the prefix, no error
 * (lib/internal/fs/promises.js readFileHandle). That is Node's behaviour over any filesystem
 * with a mid-file I/O error, not a FUSE or mount bug.
 *
 * Every read of the mount here is async or in a child process: this process serves the mount.
 */

const logger = silentLogger()
const BIG = fixtureBytes(4, 5 * SMALL_CHUNK + 12345) // 340,025 bytes, as in the issue
const HUGE = fixtureBytes(5, 12 * SMALL_CHUNK + 100) // over Node's 512 KiB readFile step
const BAD_CHUNK = 2 // the chunk at file offset 131,072 fails verification
const BAD = BAD_CHUNK * SMALL_CHUNK
const nodeMajor = Number(process.versions.node.split('.')[0])

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

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

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

  it('a single read() spanning the bad chunk returns EIO or a correct prefix ending exactly at the bad chunk, never a wrong byte', async () => {
    for (const [name, want] of [['big.bin', BIG], ['huge.bin', HUGE]] as const) {
      // From offset 0 over the whole file, and from inside a good chunk.
      for (const start of [0, SMALL_CHUNK + 100]) {
        const r = await readAt(join(mnt, name), start, want.length - start)
        if ('code' in r) {
          expect(r.code, `${name}@${start}`).toBe('EIO')
          continue
        }
        expect(r.bytes.length, `${name}@${start}: the count ends at the bad chunk`).toBe(BAD - start)
        expect(r.bytes.equals(want.subarray(start, BAD)), `${name}@${start}: bytes`).toBe(true)
      }
    }
    expect(fs.stats().verificationFailures).toBeGreaterThan(0)
  })

  it('a read starting at or inside the bad chunk fails with EIO; the chunk after it reads fine', async () => {
    for (const [name, want] of [['big.bin', BIG], ['huge.bin', HUGE]] as const) {
      for (const [start, length] of [[BAD, 4096], [BAD, want.length - BAD], [BAD + 5000, 100], [BAD + SMALL_CHUNK - 1, 1]]) {
        expect(await readAt(join(mnt, name), start, length), `${name}@${start}+${length}`).toEqual({ code: 'EIO' })
      }
      const after = await readAt(join(mnt, name), BAD + SMALL_CHUNK, SMALL_CHUNK)
      expect('bytes' in after && after.bytes.equals(want.subarray(BAD + SMALL_CHUNK, BAD + 2 * SMALL_CHUNK))).toBe(true)
    }
  })

  it('a reader that reads until EIO (cat) gets exactly the correct prefix, then the error', async () => {
    const r = await run('cat', [join(mnt, 'big.bin')], { encoding: 'buffer', maxBuffer: 1 << 24 }).then(() => undefined, (e: { stderr: Buffer, stdout: Buffer }) => e)
    expect(r?.stderr.toString()).toMatch(/Input\/output error/)
    expect(r?.stdout.length).toBe(BAD)
    expect(r?.stdout.equals(BIG.subarray(0, BAD))).toBe(true)
  })

  // Node 20 (checked with strace: read(fd, …, 340025) = 131072, and no further read()):
  // fs.promises.readFile of a file up to 512 KiB, or of any size with an encoding, resolves
  // with the prefix and no error; without an encoding a bigger file is read in 512 KiB steps
  // that continue after a short read, so the next read() hits EIO and it rejects.
  // readFileSync loops until 0 or an error, so it always rejects. Exact on Node 20; on other
  // majors only the invariant (EIO, or a correct prefix ending at the bad chunk) is asserted.
  it('Node readFile in another process: EIO or a correct prefix ending at the bad chunk (Node 20: the prefix, no error, for a file up to 512 KiB)', async () => {
    const prefix = { big: sha(BIG.subarray(0, BAD)), huge: sha(HUGE.subarray(0, BAD)) }
    const cases = [
      ['big.bin', 'async', prefix.big, 'prefix'],
      ['big.bin', 'async-latin1', prefix.big, 'prefix'],
      ['big.bin', 'sync', prefix.big, 'EIO'],
      ['huge.bin', 'async', prefix.huge, 'EIO'],
      ['huge.bin', 'async-latin1', prefix.huge, 'prefix'],
      ['huge.bin', 'sync', prefix.huge, 'EIO']
    ] as const
    for (const [name, how, prefixSha, onNode20] of cases) {
      const r = await readInChild(join(mnt, name), how)
      const what = `${name} ${how}: ${JSON.stringify(r)}`
      if (r.code != null) expect(r.code, what).toBe('EIO')
      else expect({ length: r.length, sha: r.sha }, what).toEqual({ length: BAD, sha: prefixSha })
      if (nodeMajor === 20) expect(r.code ?? 'prefix', what).toBe(onNode20)
    }
  })
})
