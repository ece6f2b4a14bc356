/**
 * The daemon's wiring of learned prefetch: the blob API's read hook, the mounter decorator and
 * the `[prefetch]` settings. The learned prefetch itself is tested between real nodes in
 * test/prefetch-record/, and on a real containerd in test/e2e/learned-prefetch.test.ts.
 */
import { request } from 'node:http'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { afterEach, describe, expect, it } from 'vitest'
import { BlobReader } from '../../src/daemon/blob-api.js'
import { DEFAULTS, loadConfig } from '../../src/daemon/config.js'
import { ControlServer } from '../../src/daemon/control.js'
import { learnedPrefetchOptions } from '../../src/daemon/learned-prefetch.js'
import { LearningLayerMounter } from '../../src/daemon/learning-mounter.js'
import { silentLogger } from '../../src/logging.js'
import type { LearnedPrefetch } from '../../src/prefetch-record/index.js'
import type { RemoteLayerMounter } from '../../src/fs/index.js'

const logger = silentLogger()

async function get (socket: string, path: string): Promise<number> {
  return await new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, path }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
    req.end()
  })
}

describe('the blob API tells learned prefetch of on-demand reads', () => {
  let dir: string | undefined
  let server: ControlServer | undefined
  afterEach(async () => {
    await server?.stop()
    if (dir != null) await rm(dir, { recursive: true, force: true })
    server = dir = undefined
  })

  it('each foreground read as it starts, and again when it ends (failed or not); background reads and refused requests not at all', async () => {
    dir = await mkdtemp(join(tmpdir(), 'learned-'))
    const cid = CID.createV1(raw.code, await sha256.digest(Buffer.from('x'))).toString()
    const events: string[] = []
    let release: () => void = () => {}
    const reader = new BlobReader({
      logger,
      openSource: async () => ({
        size: async () => 100,
        read: async (offset: number, length: number) => {
          events.push(`source ${offset}+${length}`)
          if (offset === 50) await new Promise<void>(resolve => { release = resolve })
          if (offset === 66) throw new Error('no such block')
          return new Uint8Array(length)
        }
      }),
      onRead: (c, offset, length) => {
        events.push(`start ${c === cid ? 'cid' : c} ${offset}+${length}`)
        return () => { events.push(`end ${offset}+${length}`) }
      }
    })
    const socket = join(dir, 'api.sock')
    server = new ControlServer({ logger, blobs: reader, run: async () => 0 }, { address: socket, repo: dir })
    await server.start()

    expect(await get(socket, `/v1/blobs/${cid}?offset=10&length=5`)).toBe(200)
    expect(await get(socket, `/v1/blobs/${cid}?offset=20&length=5&priority=background`)).toBe(200)
    expect(await get(socket, `/v1/blobs/${cid}?offset=66&length=1`)).toBe(502)
    expect(await get(socket, `/v1/blobs/${cid}?offset=-1&length=1`)).toBe(400)
    expect(await get(socket, `/v1/blobs/${cid}/size`)).toBe(200)
    // a read in flight has started and not ended
    const slow = get(socket, `/v1/blobs/${cid}?offset=50&length=2`)
    while (!events.includes('source 50+2')) await new Promise(resolve => setTimeout(resolve, 5))
    expect(events.at(-2)).toBe('start cid 50+2')
    expect(events).not.toContain('end 50+2')
    release()
    expect(await slow).toBe(200)
    expect(events).toEqual([
      'start cid 10+5', 'source 10+5', 'end 10+5',
      'source 20+5',
      'start cid 66+1', 'source 66+1', 'end 66+1',
      'start cid 50+2', 'source 50+2', 'end 50+2'
    ])
    await reader.close()
  })
})

/** A mounter that logs its calls; `warm` and `held` only when asked for. */
function fakeMounter (calls: string[], parts: { warm?: boolean, held?: boolean } = {}): RemoteLayerMounter {
  return {
    mount: async (mp, _labels, layer) => { calls.push(`mount ${mp} ${layer.cid}`); return { usage: async () => 7 } },
    unmount: async (mp) => { calls.push(`unmount ${mp}`) },
    check: async (mp) => { calls.push(`check ${mp}`) },
    ...(parts.warm === true ? { warm: async (layers) => { calls.push(`warm ${layers.map(l => l.cid).join(',')}`) } } : {}),
    ...(parts.held === true ? { held: async () => ['/m/kept'] } : {})
  }
}

function fakeLearned (calls: string[]): LearnedPrefetch {
  return {
    learn: async (layer: string) => { calls.push(`learn ${layer}`) },
    layerUnmounted: (layer: string) => { calls.push(`unmounted ${layer}`) }
  } as unknown as LearnedPrefetch
}

describe('LearningLayerMounter', () => {
  it('learns a layer when it is warmed or mounted, before the wrapped call; passes the rest through', async () => {
    const calls: string[] = []
    const m = new LearningLayerMounter({ inner: fakeMounter(calls, { warm: true, held: true }), learned: fakeLearned(calls) })
    await m.warm?.([{ cid: 'L1', tocDigest: 'sha256:a' }, { cid: 'L2', tocDigest: 'sha256:b' }])
    const mounted = await m.mount('/m/1', {}, { cid: 'L1', via: 'urls' })
    expect(await mounted.usage?.()).toBe(7)
    await m.check('/m/1')
    expect(await m.held?.()).toEqual(['/m/kept'])
    expect(calls).toEqual(['learn L1', 'learn L2', 'warm L1,L2', 'learn L1', 'mount /m/1 L1', 'check /m/1'])
  })

  it('closes a layer\'s recording when its last mount goes', async () => {
    const calls: string[] = []
    const m = new LearningLayerMounter({ inner: fakeMounter(calls), learned: fakeLearned(calls) })
    await m.mount('/m/1', {}, { cid: 'L1', via: 'urls' })
    await m.mount('/m/2', {}, { cid: 'L1', via: 'urls' })
    await m.mount('/m/3', {}, { cid: 'L2', via: 'urls' })
    calls.length = 0
    await m.unmount('/m/1')
    expect(calls).toEqual(['unmount /m/1'])
    await m.unmount('/m/2')
    await m.unmount('/m/3')
    await m.unmount('/m/unknown')
    expect(calls).toEqual(['unmount /m/1', 'unmount /m/2', 'unmounted L1', 'unmount /m/3', 'unmounted L2', 'unmount /m/unknown'])
  })

  it('has warm and held only when the wrapped mounter has them (the daemon offers warming by that)', () => {
    const m = new LearningLayerMounter({ inner: fakeMounter([]), learned: fakeLearned([]) })
    expect(m.warm).toBeUndefined()
    expect(m.held).toBeUndefined()
  })
})

describe('[prefetch] settings', () => {
  it('are read from the file and become the learned prefetch\'s options', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'learned-config-'))
    try {
      const file = join(dir, 'c.toml')
      await writeFile(file, 'root = "/srv/n"\n[prefetch]\nrecord_window_sec = 15\nmax_ranges = 100\nmin_ranges = 2\nmax_bytes = 1048576\nask_timeout_sec = 0.5\nconcurrency = 2\n')
      const c = await loadConfig(file)
      expect(c.prefetch).toEqual({ enable: true, recordWindowSec: 15, maxRanges: 100, minRanges: 2, maxBytes: 1048576, askTimeoutSec: 0.5, concurrency: 2 })
      expect(learnedPrefetchOptions(c)).toEqual({
        file: '/srv/n/prefetch-records.json',
        recorder: { windowMs: 15_000, minRanges: 2 },
        record: { maxRanges: 100, maxPrefetchBytes: 1048576 },
        protocol: { askTimeoutMs: 500 },
        prefetch: { concurrency: 2 },
        readTimeoutMs: DEFAULTS.fs.fetchTimeoutSec * 1000
      })
      await writeFile(file, '[prefetch]\nenable = false\n')
      expect((await loadConfig(file)).prefetch.enable).toBe(false)
      await writeFile(file, '[prefetch]\nenabled = false\n')
      await expect(loadConfig(file)).rejects.toThrow(/unknown setting "enabled"/)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('default to on, with the documented values', () => {
    expect(DEFAULTS.prefetch).toEqual({ enable: true, recordWindowSec: 60, maxRanges: 2048, minRanges: 3, maxBytes: 512 << 20, askTimeoutSec: 0.3, concurrency: 4 })
  })
})
