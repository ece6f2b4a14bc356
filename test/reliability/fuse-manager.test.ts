/**
 * Faults around the FUSE manager process (spawned as the daemon spawns it): its daemon killed
 * while a layer's background fetch is under way, then SIGTERM; its daemon killed and the root
 * folder removed. Each time the manager exits promptly and leaves no FUSE mount behind.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BlobReader } from '../../src/daemon/blob-api.js'
import { ControlServer } from '../../src/daemon/control.js'
import { buildEstargzFile } from '../../src/estargz/index.js'
import { fuseMountsUnder } from '../../src/fs/mountinfo.js'
import { FuseManagerClient } from '../../src/fusemgr/index.js'
import { silentLogger } from '../../src/logging.js'
import { FileSource } from '../../src/source/file.js'
import { hasCommand, hasFuse, isRoot, needs } from '../helpers/env.js'
import { fixtureBytes, makeTar } from '../../scripts/fixtures/tar.js'
import { cliPath } from '../../scripts/fixtures/tools.js'
import { removeDir, tempDir } from '../fs/helpers.js'
import { record } from './harness.js'

const logger = silentLogger()

describe.skipIf(needs({ root: isRoot, fuse: hasFuse, fusermount: hasCommand('fusermount') }))('FUSE manager faults', () => {
  let dir: string
  let blob: string
  let cid: string
  let tocDigest: string
  const children: ChildProcess[] = []

  beforeAll(async () => {
    dir = await tempDir('reliability-fm')
    const tar = join(dir, 'layer.tar')
    await writeFile(tar, makeTar([{ name: 'etc/hello.txt', data: 'hello\n' }, { name: 'big.bin', data: fixtureBytes(3, 6 << 20) }]))
    blob = join(dir, 'layer.esgz')
    tocDigest = (await buildEstargzFile(tar, blob, { chunkSize: 64 << 10 })).tocDigest
    cid = CID.createV1(raw.code, await sha256.digest(await readFile(blob))).toString()
  })

  afterAll(async () => {
    for (const c of children) if (c.exitCode == null && c.signalCode == null) c.kill('SIGKILL')
    await removeDir(dir)
  })

  /** A daemon stand-in (the real blob API over the blob file) whose reads are slow, so a background fetch is under way when it goes. */
  async function standInDaemon (socket: string): Promise<ControlServer> {
    const reader = new BlobReader({
      logger,
      openSource: async () => {
        const src = await FileSource.open(blob)
        return { size: async () => await src.size(), read: async (o, l, s) => { await new Promise(resolve => setTimeout(resolve, 30)); return await src.read(o, l, s) }, close: async () => { await src.close() } }
      }
    })
    const server = new ControlServer({ logger, blobs: reader, run: async () => 0 }, { address: socket, repo: dir })
    await server.start()
    return server
  }

  /** A manager process over `root`, a layer mounted with background fetch on, one file read. */
  async function managerWithMount (name: string): Promise<{ root: string, child: ChildProcess, api: ControlServer, exited: Promise<number> }> {
    const root = join(dir, name)
    const socket = join(root, 'fuse-manager.sock')
    const api = await standInDaemon(join(dir, `${name}-api.sock`))
    const child = spawn(process.execPath, [cliPath, 'fuse-manager', '--root', root, '--socket', socket, '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'pipe'] })
    children.push(child)
    const exited = new Promise<number>(resolve => child.once('exit', () => { resolve(Date.now()) }))
    const client = new FuseManagerClient(socket)
    for (let i = 0; ; i++) {
      try { await client.health(); break } catch (err) { if (i > 100) throw err; await new Promise(resolve => setTimeout(resolve, 100)) }
    }
    await client.attach({ blobSocket: join(dir, `${name}-api.sock`) })
    const mp = join(root, 'snapshotter', 'snapshots', '1', 'fs')
    await mkdir(mp, { recursive: true })
    await client.mount({ mountpoint: mp, cid, tocDigest, settings: { backgroundFetch: true } })
    expect(await readFile(join(mp, 'etc/hello.txt'), 'utf8')).toBe('hello\n')
    return { root, child, api, exited }
  }

  it('its daemon killed and its chunk cache removed during a background fetch: SIGTERM ends the manager at once, nothing stays mounted', async () => {
    // Before: stop() waited for the layer's reads, each waiting up to a minute for a daemon to come back, one after the other.
    const { root, child, api, exited } = await managerWithMount('term')
    await api.stop() // the daemon is gone (as after kill -9: its socket no longer answers)
    spawnSync('rm', ['-rf', join(root, 'cache')]) // and its chunk cache with it
    await new Promise(resolve => setTimeout(resolve, 5000)) // background reads now wait for a daemon
    const t0 = Date.now()
    child.kill('SIGTERM')
    const at = await Promise.race([exited, new Promise<number>(resolve => setTimeout(() => { resolve(-1) }, 15_000))])
    expect(at, 'the manager did not exit within 15 s of SIGTERM').toBeGreaterThan(0)
    expect(await fuseMountsUnder(root)).toEqual([])
    record({ kind: 'fault', fault: 'FUSE manager: daemon gone mid background fetch, then SIGTERM', injected: 1, survived: 1, note: `exited ${at - t0} ms after SIGTERM` })
  })

  it('its daemon killed and the root folder removed: the manager sees its socket gone and exits by itself', async () => {
    // Before: it served its orphaned mounts forever, polling for a daemon that could never reach it.
    const { root, api, exited } = await managerWithMount('orphan')
    await api.stop()
    spawnSync('rm', ['-rf', root]) // fails inside the mount (read-only), removes the rest: the socket too
    const at = await Promise.race([exited, new Promise<number>(resolve => setTimeout(() => { resolve(-1) }, 30_000))])
    expect(at, 'the manager did not exit within 30 s of its socket\'s removal').toBeGreaterThan(0)
    expect(await fuseMountsUnder(root)).toEqual([])
    record({ kind: 'fault', fault: 'FUSE manager: daemon gone and root folder removed', injected: 1, survived: 1 })
  })
})
