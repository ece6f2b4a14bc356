import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { afterAll, describe, expect, it } from 'vitest'
import { BlobReader } from '../../src/daemon/blob-api.js'
import { ControlServer } from '../../src/daemon/control.js'
import { buildEstargzFile } from '../../src/estargz/index.js'
import { DEFAULTS as FS_DEFAULTS } from '../../src/fs/index.js'
import { FuseManager, FuseManagerClient } from '../../src/fusemgr/index.js'
import { silentLogger } from '../../src/logging.js'
import { FileSource } from '../../src/source/file.js'
import { hasCommand, hasFuse, isRoot, needs } from '../helpers/env.js'
import { SMALL_CHUNK } from '../helpers/fixtures.js'
import { fixtureBytes, makeTar } from '../../scripts/fixtures/tar.js'
import { removeDir, tempDir } from '../fs/helpers.js'

const logger = silentLogger()

type Priority = 'demand' | 'prefetch' | 'background'

/** The real blob API over one local blob, recording each read's priority and what it reported as on-demand. */
async function standInDaemon (blob: string, socket: string, repo: string): Promise<{ api: ControlServer, reads: Array<{ offset: number, hint: Priority }>, onRead: string[] }> {
  const reads: Array<{ offset: number, hint: Priority }> = []
  const onRead: string[] = []
  const reader = new BlobReader({
    logger,
    openSource: async () => {
      const src = await FileSource.open(blob)
      return {
        size: async () => await src.size(),
        read: async (o, l, s, hint) => { reads.push({ offset: o, hint: hint?.background === true ? 'background' : hint?.prefetch === true ? 'prefetch' : 'demand' }); return await src.read(o, l, s) },
        close: async () => { await src.close() }
      }
    },
    onRead: (_c, offset) => { onRead.push(String(offset)); return () => {} }
  })
  const api = new ControlServer({ logger, blobs: reader, run: async () => 0 }, { address: socket, repo })
  await api.start()
  return { api, reads, onRead }
}

/**
 * The FUSE manager's background fetch reaches the daemon marked as background, its prefetch as
 * prefetch: the daemon lets a container's reads go before background ones, and takes neither for
 * a container's reads (learned prefetch records only those).
 */
describe.skipIf(needs({ root: isRoot, fuse: hasFuse, fusermount: hasCommand('fusermount') }))('FUSE manager: background reads stay background through the blob API', () => {
  let dir: string | undefined
  let manager: FuseManager | undefined
  let api: ControlServer | undefined
  afterAll(async () => {
    await manager?.stop()
    await api?.stop()
    await removeDir(dir)
  })

  it('the background fetch after mount reads with priority=background; the mount\'s own reads are on demand', async () => {
    dir = await tempDir('fusemgr-bg')
    const tar = join(dir, 'layer.tar')
    await writeFile(tar, makeTar([{ name: 'usr/big.bin', data: fixtureBytes(3, 6 * SMALL_CHUNK + 11) }, { name: 'etc/a.txt', data: 'a\n' }]))
    const blob = join(dir, 'layer.esgz')
    const { tocDigest } = await buildEstargzFile(tar, blob, { chunkSize: SMALL_CHUNK })
    const cid = CID.createV1(raw.code, await sha256.digest(await readFile(blob))).toString()
    const apiSocket = join(dir, 'api.sock')
    const standIn = await standInDaemon(blob, apiSocket, dir)
    api = standIn.api
    const { reads, onRead } = standIn
    manager = new FuseManager({ logger }, { socket: join(dir, 'fm.sock'), mountRoot: join(dir, 'mnt'), cacheDir: join(dir, 'cache'), idleExitMs: 3_600_000, warmTtlMs: 1_000 })
    await manager.start()
    const client = new FuseManagerClient(join(dir, 'fm.sock'))
    await client.attach({ blobSocket: apiSocket })
    const mp = join(dir, 'mnt', 'a')
    await mkdir(mp, { recursive: true })
    await client.mount({ mountpoint: mp, cid, tocDigest, settings: { backgroundFetch: true } })
    const atMount = reads.length
    expect(atMount).toBeGreaterThan(0)
    expect(reads.every(r => r.hint !== 'background')).toBe(true) // footer and TOC: the mount waits for them
    // the background fetch starts once reads have been quiet for a while, and reads every chunk
    const end = Date.now() + FS_DEFAULTS.backgroundQuietMs + 10_000
    while (reads.length === atMount && Date.now() < end) await new Promise(resolve => setTimeout(resolve, 100))
    await new Promise(resolve => setTimeout(resolve, 500))
    const later = reads.slice(atMount)
    expect(later.length).toBeGreaterThan(0)
    expect(later.filter(r => r.hint !== 'background')).toEqual([])
    // the daemon was told of the mount's reads only
    expect(onRead).toHaveLength(atMount)
    await client.unmount(mp)
  }, 60_000)

  it('the landmark prefetch at mount reads with priority=prefetch: as urgent as a container\'s reads, not recorded as one', async () => {
    dir ??= await tempDir('fusemgr-bg')
    const tar = join(dir, 'landmark.tar')
    const big = fixtureBytes(5, 6 * SMALL_CHUNK + 11)
    await writeFile(tar, makeTar([{ name: 'usr/big.bin', data: big }, { name: 'etc/b.txt', data: 'b\n' }]))
    const blob = join(dir, 'landmark.esgz')
    const { tocDigest } = await buildEstargzFile(tar, blob, { chunkSize: SMALL_CHUNK, prioritizedFiles: ['usr/big.bin'] })
    const cid = CID.createV1(raw.code, await sha256.digest(await readFile(blob))).toString()
    const apiSocket = join(dir, 'api2.sock')
    const { api: api2, reads, onRead } = await standInDaemon(blob, apiSocket, dir)
    const m = new FuseManager({ logger }, { socket: join(dir, 'fm2.sock'), mountRoot: join(dir, 'mnt2'), cacheDir: join(dir, 'cache2'), idleExitMs: 3_600_000, warmTtlMs: 1_000 })
    await m.start()
    try {
      const client = new FuseManagerClient(join(dir, 'fm2.sock'))
      await client.attach({ blobSocket: apiSocket })
      const mp = join(dir, 'mnt2', 'b')
      await mkdir(mp, { recursive: true })
      await client.mount({ mountpoint: mp, cid, tocDigest, settings: { backgroundFetch: false } })
      // footer and TOC on demand, then the prioritized file as prefetch; nothing as background
      expect(reads.filter(r => r.hint === 'prefetch').length).toBeGreaterThan(0)
      expect(reads.filter(r => r.hint === 'background')).toEqual([])
      expect(onRead).toHaveLength(reads.filter(r => r.hint === 'demand').length)
      // the prefetched file reads from the cache: no more reads reach the daemon
      const n = reads.length
      expect(Buffer.from(await readFile(join(mp, 'usr/big.bin'))).equals(big)).toBe(true)
      expect(reads.length).toBe(n)
      await client.unmount(mp)
    } finally {
      await m.stop()
      await api2.stop()
    }
  }, 60_000)
})
