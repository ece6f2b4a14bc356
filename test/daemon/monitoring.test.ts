import { spawnSync } from 'node:child_process'
import { readFile, mkdtemp } from 'node:fs/promises'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type * as grpc from '@grpc/grpc-js'
import { startDaemon, type RunningDaemon } from '../../scripts/fixtures/daemon.js'
import { hasCommand, hasFuse, isRoot, needs } from '../helpers/env.js'
import { makeImage, tagged, writeLayout, allBlobs } from '../../scripts/fixtures/oci-image.js'
import { snapshotsClient, type SnapshotsClient } from '../../scripts/fixtures/snapshots-client.js'
import { chainIds } from '../../scripts/fixtures/digest.js'
import { removeWorkDir } from '../../scripts/fixtures/work-dir.js'
import { download } from '../mirror/helpers.js'
import { runBytes, runCli as cli } from '../../scripts/fixtures/run.js'

/** One plain HTTP call (no keep-alive agent). */
async function call (url: string, method = 'GET'): Promise<{ status: number, body: string, type?: string }> {
  return await new Promise((resolve, reject) => {
    const req = request(url, { method, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { body += d })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, type: res.headers['content-type'] }))
    })
    req.on('error', reject)
    req.end()
  })
}

/** The value of one series of the exposition text (0 when absent). */
function sample (text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m == null || m[1] !== name) continue
    const got = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map(x => [x[1], x[2]]))
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3])
  }
  return 0
}

/** Mounts what the snapshotter returned at `at` (as containerd would), runs `fn`, unmounts. */
async function withMounts<T> (mounts: Array<{ type: string, source: string, options: string[] }>, at: string, fn: () => Promise<T>): Promise<T> {
  const m = mounts[0]
  const opts = m.options.filter(o => o !== 'rbind')
  const r = spawnSync('mount', [...(m.type === 'bind' ? ['--bind'] : ['-t', m.type]), ...(opts.length > 0 ? ['-o', opts.join(',')] : []), m.source, at], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`mount failed: ${r.stderr}`)
  try {
    return await fn()
  } finally {
    spawnSync('umount', [at])
  }
}

interface LayerOut { mountpoint: string, cid: string, sizeBytes: number, fetched: { onDemand: number, prefetch: number, background: number, total: number }, from: { chunkCache: number, localBlockstore: number, network: number }, bytesServed: number }

describe.skipIf(needs({ root: isRoot, fuse: hasFuse, fusermount: hasCommand('fusermount') }))('monitoring: /metrics, /healthz, stats per layer, one pid per log line', () => {
  let dir: string
  let a: RunningDaemon
  let b: RunningDaemon
  let client: SnapshotsClient
  let url: string
  const image = makeImage({ seed: 'monitoring', layerSize: 300_000 })
  let layers: Array<{ digest: string, cid: string, tocDigest: string, diffID: string, size: number }>
  let chain: string[]
  let before: string
  let root: string

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'monitoring-test-'))
    await writeLayout(join(dir, 'img'), allBlobs(image), [tagged(image.manifest.descriptor, 'latest')])
    // the seed serves a mirror too: its counters are A's /metrics
    a = await startDaemon({ root: join(dir, 'a'), listen: ['/ip4/127.0.0.1/tcp/0'], config: '[mirror]\nenable = true\naddress = "127.0.0.1:0"\n[http]\naddress = "127.0.0.1:0"\n' })
    const pushed = await cli(['push', `oci:${join(dir, 'img')}`, '--repo', join(dir, 'a'), '--json', '--chunk-size', '65536'])
    if (pushed.code !== 0) throw new Error(pushed.stderr)
    const out = JSON.parse(pushed.stdout) as { root: string, images: Array<{ layers: typeof layers }> }
    layers = out.images[0].layers
    root = out.root
    chain = chainIds(layers.map(l => l.diffID))
    const peer = (JSON.parse((await cli(['id', '--repo', join(dir, 'a')])).stdout) as { addresses: string[] }).addresses[0]
    // no background fetch: what the read fetches is all the layer fetches (the bytes stay on demand)
    b = await startDaemon({ root: join(dir, 'b'), peers: [peer], config: '[fs]\nbackground_fetch = false\n[http]\naddress = "127.0.0.1:0"\n' })
    client = snapshotsClient(b.address)
    const m = /metrics on (http:\/\/[^\s,]+)\/metrics/.exec(b.log())
    if (m == null) throw new Error(`no metrics URL in the daemon's output:\n${b.log()}`)
    url = m[1]
  }, 300_000)

  afterAll(async () => {
    client?.close()
    await b?.stop()
    await a?.stop()
    if (dir != null) await removeWorkDir(dir)
  })

  it('/healthz answers ok; only GET of /metrics and /healthz is served', async () => {
    expect(await call(`${url}/healthz`)).toMatchObject({ status: 200, body: 'ok\n' })
    expect((await call(`${url}/metrics`, 'POST')).status).toBe(405)
    expect((await call(`${url}/healthz`, 'DELETE')).status).toBe(405)
    expect((await call(`${url}/other`)).status).toBe(404)
    before = (await call(`${url}/metrics`)).body
    expect(sample(before, 'ipfs_estargz_fuse_manager_up')).toBe(1)
    expect(sample(before, 'ipfs_estargz_peers')).toBe(1)
    expect(sample(before, 'ipfs_estargz_mounts')).toBe(0)
    // learned prefetch is on by default: its series are there, no hand-off fell back
    expect(sample(before, 'ipfs_estargz_learned_prefetch_layers_total', { outcome: 'hand_off_fallback' })).toBe(0)
    expect(sample(before, 'ipfs_estargz_learned_prefetch_records_total', { event: 'rejected' })).toBe(0)
  })

  it('a daemon serving a mirror counts its requests and blob answers on /metrics (none without a mirror)', async () => {
    const aUrl = /metrics on (http:\/\/[^\s,]+)\/metrics/.exec(a.log())?.[1]
    const mirror = /mirror on (http:\/\/[^\s,]+)/.exec(a.log())?.[1]
    expect(aUrl).toBeDefined()
    expect(mirror).toBeDefined()
    const blob = `${mirror ?? ''}/v2/ipfs/${root}/blobs/${layers[0].digest}`
    const get = async (headers: Record<string, string> = {}): Promise<{ status: number, bytes: number }> => {
      const r = await download(blob, headers)
      return { status: r.status, bytes: r.body.length }
    }
    const whole = await get()
    expect(whole).toEqual({ status: 200, bytes: layers[0].size })
    expect(await get({ Range: 'bytes=0-99' })).toEqual({ status: 206, bytes: 100 })
    expect((await call(`${mirror ?? ''}/v2/ipfs/${root}/blobs/sha256:${'0'.repeat(64)}`)).status).toBe(404)
    const text = (await call(`${aUrl ?? ''}/metrics`)).body
    expect(sample(text, 'ipfs_estargz_mirror_requests_total', { outcome: 'served' })).toBe(3)
    expect(sample(text, 'ipfs_estargz_mirror_requests_total', { outcome: 'refused' })).toBe(0)
    expect(sample(text, 'ipfs_estargz_mirror_blob_answers_total', { kind: 'whole' })).toBe(1)
    expect(sample(text, 'ipfs_estargz_mirror_blob_answers_total', { kind: 'range' })).toBe(1)
    expect(sample(text, 'ipfs_estargz_mirror_blob_bytes_total')).toBe(layers[0].size + 100)
    expect(text).toMatch(/^ipfs_estargz_mirror_extent_answers_total\{outcome="missed"\} 0$/m)
    // B serves no mirror: no such series
    expect((await call(`${url}/metrics`)).body).not.toMatch(/^ipfs_estargz_mirror_/m)
  })

  it('the counters move when a lazily mounted file is read with cat', async () => {
    const cid = layers[0].cid
    const err = await client.prepare(`extract-0 ${chain[0]}`, '', {
      'containerd.io/snapshot.ref': chain[0],
      'containerd.io/snapshot/remote/urls': `ipfs://${cid}`,
      'containerd.io/snapshot/stargz/toc.digest': layers[0].tocDigest
    }).then(() => undefined, (e: grpc.ServiceError) => e)
    expect(err?.code, err?.message).toBe(6) // committed as a remote snapshot
    const mounted = (await call(`${url}/metrics`)).body
    expect(sample(mounted, 'ipfs_estargz_mounts')).toBe(1)
    expect(sample(mounted, 'ipfs_estargz_remote_snapshots_prepared_total')).toBe(1)
    const fetchedAtMount = sample(mounted, 'stargz_fs_layer_fetched_size_bytes', { layer: cid })
    const at = await mkdtemp(join(dir, 'view-'))
    await withMounts(await client.view('v-0', chain[0]), at, async () => {
      const cat = await runBytes('cat', [join(at, 'dir0', 'big.bin')])
      expect(cat.code).toBe(0)
      expect(cat.stdout).toEqual(Buffer.alloc(300_000, 1))
    })
    const after = (await call(`${url}/metrics`)).body
    // the layer's own counters, named as the reference names them
    expect(sample(after, 'stargz_fs_layer_fetched_size_bytes', { layer: cid })).toBeGreaterThan(fetchedAtMount)
    expect(sample(after, 'stargz_fs_layer_size_bytes', { layer: cid })).toBeGreaterThan(0) // compressed: the file is one byte repeated
    expect(sample(after, 'stargz_fs_bytes_served', { layer: cid })).toBeGreaterThanOrEqual(300_000)
    expect(sample(after, 'stargz_fs_operation_duration_milliseconds_count', { operation_type: 'remote_registry_get', layer: cid })).toBeGreaterThan(0)
    expect(sample(after, 'stargz_fs_operation_duration_milliseconds_bucket', { operation_type: 'remote_registry_get', layer: cid, le: '+Inf' }))
      .toBe(sample(after, 'stargz_fs_operation_duration_milliseconds_count', { operation_type: 'remote_registry_get', layer: cid }))
    expect(sample(after, 'ipfs_estargz_layer_fetched_bytes', { layer: cid, priority: 'on_demand' })).toBeGreaterThan(0)
    expect(sample(after, 'ipfs_estargz_layer_fetched_bytes', { layer: cid, priority: 'background' })).toBe(0)
    // the node fetched the blocks from its peer: by our exchange (or bitswap), never from a gateway
    const network = (t: string): number => sample(t, 'ipfs_estargz_fetched_bytes_total', { source: 'exchange' }) + sample(t, 'ipfs_estargz_fetched_bytes_total', { source: 'bitswap' })
    expect(network(after)).toBeGreaterThan(network(before))
    expect(sample(after, 'ipfs_estargz_fetched_bytes_total', { source: 'gateway' })).toBe(0)
    expect(sample(after, 'ipfs_estargz_chunk_cache_requests_total', { result: 'miss' })).toBeGreaterThan(sample(before, 'ipfs_estargz_chunk_cache_requests_total', { result: 'miss' }))
    expect(sample(after, 'ipfs_estargz_chunk_cache_size_bytes', { tier: 'disk' })).toBeGreaterThan(0)
    expect(sample(after, 'ipfs_estargz_verification_failures_total', { kind: 'chunk' })).toBe(0)
    expect(after).toMatch(/^ipfs_estargz_snapshot_fallbacks_total\{reason="mount-failed"\} 0$/m)
    await client.remove('v-0')
  })

  it('stats --json shows the mounted layer: bytes fetched on demand and from where', async () => {
    const r = await cli(['stats', '--repo', join(dir, 'b'), '--json'])
    expect(r.code, r.stderr).toBe(0)
    const s = JSON.parse(r.stdout) as { fetched: Record<string, { bytes: number }>, layers: LayerOut[] }
    expect(s.fetched.exchange.bytes + s.fetched.bitswap.bytes).toBeGreaterThan(0) // the output it had before stays
    expect(s.layers).toHaveLength(1)
    const l = s.layers[0]
    expect(l.cid).toBe(layers[0].cid)
    expect(l.mountpoint).toContain(join(dir, 'b'))
    expect(l.fetched.onDemand).toBeGreaterThan(0)
    expect(l.fetched.background).toBe(0)
    expect(l.fetched.total).toBe(l.fetched.onDemand + l.fetched.prefetch + l.fetched.background)
    // the layer's blocks came from the peer (the node had none of them)
    expect(l.from.network).toBeGreaterThanOrEqual(l.fetched.total)
    expect(l.from.localBlockstore).toBeLessThan(l.from.network)
    expect(l.bytesServed).toBeGreaterThanOrEqual(300_000)
    const text = await cli(['stats', '--repo', join(dir, 'b')])
    expect(text.code, text.stderr).toBe(0)
    expect(text.stdout).toMatch(/^fetched exchange /m)
    expect(text.stdout).toMatch(/^layers mounted +1$/m)
    expect(text.stdout).toContain(`layer ${layers[0].cid}`)
    expect(text.stdout).toMatch(/fetched \d+ B: on demand [1-9]\d* B, prefetch \d+ B, background 0 B/)
  })

  it('with the mounts in the daemon ([fuse_manager] enable = false), stats and /metrics show them too', async () => {
    const peer = (JSON.parse((await cli(['id', '--repo', join(dir, 'a')])).stdout) as { addresses: string[] }).addresses[0]
    const c = await startDaemon({ root: join(dir, 'c'), peers: [peer], config: '[fuse_manager]\nenable = false\n[fs]\nbackground_fetch = false\n[http]\naddress = "127.0.0.1:0"\n' })
    const cc = snapshotsClient(c.address)
    try {
      const cUrl = (/metrics on (http:\/\/[^\s,]+)\/metrics/.exec(c.log()) as RegExpExecArray)[1]
      const err = await cc.prepare(`extract-1 ${chain[0]}`, '', {
        'containerd.io/snapshot.ref': chain[0],
        'containerd.io/snapshot/remote/urls': `ipfs://${layers[0].cid}`,
        'containerd.io/snapshot/stargz/toc.digest': layers[0].tocDigest
      }).then(() => undefined, (e: grpc.ServiceError) => e)
      expect(err?.code, err?.message).toBe(6)
      const at = await mkdtemp(join(dir, 'inproc-'))
      await withMounts(await cc.view('v-c', chain[0]), at, async () => {
        expect((await runBytes('cat', [join(at, 'dir0', 'big.bin')])).stdout).toEqual(Buffer.alloc(300_000, 1))
      })
      const r = await cli(['stats', '--repo', join(dir, 'c'), '--json'])
      expect(r.code, r.stderr).toBe(0)
      const l = (JSON.parse(r.stdout) as { layers: LayerOut[] }).layers
      expect(l.map(x => x.cid)).toEqual([layers[0].cid])
      expect(l[0].fetched.onDemand).toBeGreaterThan(0)
      expect(l[0].from.network).toBeGreaterThan(0)
      const text = (await call(`${cUrl}/metrics`)).body
      expect(sample(text, 'ipfs_estargz_mounts')).toBe(1)
      expect(sample(text, 'ipfs_estargz_layer_fetched_bytes', { layer: layers[0].cid, priority: 'on_demand' })).toBe(l[0].fetched.onDemand)
      expect(sample(text, 'ipfs_estargz_chunk_cache_requests_total', { result: 'miss' })).toBeGreaterThan(0)
      expect(text).not.toMatch(/^ipfs_estargz_fuse_manager_up /m) // no manager: no such series
      await cc.remove('v-c')
    } finally {
      cc.close()
      await c.stop()
    }
  }, 120_000)

  it('every log line of the daemon and its FUSE manager carries exactly one pid', async () => {
    const lines = [...b.log().split('\n'), ...(await readFile(join(dir, 'b', 'fuse-manager.log'), 'utf8')).split('\n')].filter(l => l.startsWith('{'))
    expect(lines.some(l => l.includes('the FUSE manager'))).toBe(true) // the lines that named the manager's pid too
    for (const line of lines) expect(line.match(/"pid":/g), line).toHaveLength(1)
  })
})
