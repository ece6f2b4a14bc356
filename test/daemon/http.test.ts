import { connect } from 'node:net'
import { request } from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import { HttpListenerError } from '../../src/daemon/errors.js'
import { HttpListener, type HttpComponents } from '../../src/daemon/http.js'
import { DaemonMetrics, type DaemonSnapshot } from '../../src/daemon/metrics.js'
import { newRemoteMetrics } from '../../src/snapshotter/remote.js'
import { silentLogger } from '../../src/logging.js'
import type { LayerStats } from '../../src/daemon/layer-stats.js'

async function call (url: string, method = 'GET'): Promise<{ status: number, body: string, headers: Record<string, unknown> }> {
  return await new Promise((resolve, reject) => {
    const req = request(url, { method, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { body += d })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }))
    })
    req.on('error', reject)
    req.end()
  })
}

function layer (over: Partial<LayerStats> = {}): LayerStats {
  return {
    mountpoint: '/m/1',
    cid: 'bafylayer',
    tocDigest: 'sha256:aa',
    sizeBytes: 1000,
    prefetchSizeBytes: 100,
    fetched: { onDemand: 300, prefetch: 100, background: 50, total: 450 },
    from: { chunkCache: 70, localBlockstore: 10, network: 460 },
    bytesServed: 900,
    cacheHits: 3,
    cacheMisses: 4,
    verificationFailures: 2,
    fetchTimeouts: 0,
    sourceErrors: 0,
    fetchMs: { boundsMs: [1, 2, 4], counts: [1, 0, 2, 1], sumMs: 20, count: 4 },
    prefetchDone: true,
    complete: false,
    ...over
  }
}

function snapshot (over: Partial<DaemonSnapshot> = {}): DaemonSnapshot {
  const remote = newRemoteMetrics()
  remote.fallbacks['mount-timeout'] = 3
  return {
    fetch: { localBlocks: 1, localBytes: 11, exchangeBlocks: 2, exchangeBytes: 22, bitswapBlocks: 3, bitswapBytes: 33, gatewayBlocks: 4, gatewayBytes: 44, onBehalfBlocks: 0, onBehalfBytes: 0, failures: 5 },
    exchange: { badBlocks: 6, hedges: 4, cooperativeFetches: 9, waitsInVain: 1, requests: 20, prefetchRequests: 7, backgroundRequests: 3 } as DaemonSnapshot['exchange'],
    peers: { peerA: { blocksReceived: 1, bytesReceived: 123, blocksServed: 0, bytesServed: 7, badBlocks: 0, failedRequests: 0 } },
    connectedPeers: 1,
    remote,
    mounts: 1,
    layers: [layer()],
    cache: { diskBytes: 500, diskEntries: 5, memoryBytes: 50, evictions: 0, corruptFiles: 0, writeFailures: 2, hits: 3, hitBytes: 70, misses: 1 },
    fuseManagerUp: true,
    ...over
  }
}

function line (text: string, series: string): string | undefined {
  return text.split('\n').find(l => l.startsWith(`${series} `))
}

describe('DaemonMetrics', () => {
  it('renders every metric from one snapshot: reference names where they mean the same, ours otherwise', async () => {
    const { text, contentType } = await new DaemonMetrics().render(snapshot())
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/)
    // the histogram's buckets are cumulative, +Inf is the count
    const h = 'stargz_fs_operation_duration_milliseconds'
    const labels = 'operation_type="remote_registry_get",layer="bafylayer"'
    expect(line(text, `${h}_bucket{${labels},le="1"}`)).toMatch(/ 1$/)
    expect(line(text, `${h}_bucket{${labels},le="2"}`)).toMatch(/ 1$/)
    expect(line(text, `${h}_bucket{${labels},le="4"}`)).toMatch(/ 3$/)
    expect(line(text, `${h}_bucket{${labels},le="+Inf"}`)).toMatch(/ 4$/)
    expect(line(text, `${h}_sum{${labels}}`)).toMatch(/ 20$/)
    expect(text).toContain(`# TYPE ${h} histogram`)
    expect(line(text, 'stargz_fs_layer_fetched_size_bytes{layer="bafylayer",mountpoint="/m/1"}')).toMatch(/ 450$/)
    expect(line(text, 'ipfs_estargz_layer_fetched_bytes{layer="bafylayer",mountpoint="/m/1",priority="background"}')).toMatch(/ 50$/)
    expect(line(text, 'ipfs_estargz_fetched_bytes_total{source="chunk_cache"}')).toMatch(/ 70$/)
    expect(line(text, 'ipfs_estargz_fetched_bytes_total{source="gateway"}')).toMatch(/ 44$/)
    expect(line(text, 'ipfs_estargz_peer_received_bytes_total{peer="peerA"}')).toMatch(/ 123$/)
    expect(line(text, 'ipfs_estargz_verification_failures_total{kind="chunk"}')).toMatch(/ 2$/)
    expect(line(text, 'ipfs_estargz_verification_failures_total{kind="block"}')).toMatch(/ 6$/)
    expect(line(text, 'ipfs_estargz_exchange_events_total{event="hedge"}')).toMatch(/ 4$/)
    expect(line(text, 'ipfs_estargz_exchange_events_total{event="cooperative_fetch"}')).toMatch(/ 9$/)
    expect(line(text, 'ipfs_estargz_exchange_events_total{event="wait_in_vain"}')).toMatch(/ 1$/)
    expect(line(text, 'ipfs_estargz_exchange_events_total{event="ranked_dont_have"}')).toMatch(/ 0$/)
    expect(line(text, 'ipfs_estargz_exchange_requests_total{priority="on_demand"}')).toMatch(/ 10$/)
    expect(line(text, 'ipfs_estargz_exchange_requests_total{priority="prefetch"}')).toMatch(/ 7$/)
    expect(line(text, 'ipfs_estargz_exchange_requests_total{priority="background"}')).toMatch(/ 3$/)
    expect(line(text, 'ipfs_estargz_chunk_cache_hit_ratio')).toMatch(/ 0\.75$/)
    expect(line(text, 'ipfs_estargz_chunk_cache_write_failures_total')).toMatch(/ 2$/)
    expect(line(text, 'ipfs_estargz_snapshot_fallbacks_total{reason="mount-timeout"}')).toMatch(/ 3$/)
    expect(line(text, 'ipfs_estargz_fuse_manager_up')).toMatch(/ 1$/)
    const names = [...text.matchAll(/^# TYPE (\S+)/gm)].map(m => m[1])
    expect(names.filter(n => !/^(stargz_fs_|ipfs_estargz_|process_|nodejs_)/.test(n))).toEqual([])
    // the next scrape shows its own snapshot, not the sum of both
    const again = (await new DaemonMetrics().render(snapshot({ layers: [], mounts: 0 }))).text
    expect(again).not.toContain('bafylayer')
    expect(line(again, 'ipfs_estargz_mounts')).toMatch(/ 0$/)
  })
})

describe('HttpListener', () => {
  let listener: HttpListener | undefined
  afterEach(async () => { await listener?.stop(); listener = undefined })

  const start = async (components: Partial<HttpComponents> = {}, options: ConstructorParameters<typeof HttpListener>[1] = {}): Promise<string> => {
    listener = new HttpListener({ logger: silentLogger(), snapshot: async () => snapshot(), health: async () => ({ ok: true }), ...components }, { address: '127.0.0.1:0', ...options })
    await listener.start()
    return listener.url
  }

  it('refuses a non-loopback address without public, and an address that is not HOST:PORT', () => {
    expect(() => new HttpListener({ logger: silentLogger(), snapshot: async () => snapshot(), health: async () => ({ ok: true }) }, { address: '0.0.0.0:5381' }))
      .toThrow(expect.objectContaining({ code: HttpListenerError.code, message: expect.stringMatching(/public = true/) }))
    expect(() => new HttpListener({ logger: silentLogger(), snapshot: async () => snapshot(), health: async () => ({ ok: true }) }, { address: 'nowhere' }))
      .toThrow(expect.objectContaining({ code: HttpListenerError.code }))
  })

  it('an address in use fails the start with its error', async () => {
    const url = await start()
    const other = new HttpListener({ logger: silentLogger(), snapshot: async () => snapshot(), health: async () => ({ ok: true }) }, { address: url.replace('http://', '') })
    await expect(other.start()).rejects.toMatchObject({ code: HttpListenerError.code, cause: { code: 'EADDRINUSE' } })
  })

  it('answers GET only, /healthz 503 with the reason when unhealthy, and bounds what a request waits for', async () => {
    let healthy: { ok: true } | { ok: false, why: string } = { ok: true }
    const url = await start({ health: async () => healthy, snapshot: async () => await new Promise<never>(() => {}) }, { collectTimeoutMs: 300 })
    expect((await call(`${url}/healthz`)).body).toBe('ok\n')
    healthy = { ok: false, why: 'the FUSE manager does not answer' }
    expect(await call(`${url}/healthz`)).toMatchObject({ status: 503, body: 'unhealthy: the FUSE manager does not answer\n' })
    const post = await call(`${url}/metrics`, 'POST')
    expect(post.status).toBe(405)
    expect(post.headers.allow).toBe('GET')
    expect((await call(`${url}/metrics`, 'HEAD')).status).toBe(405)
    // a snapshot that never comes: answered after collectTimeoutMs, not never
    expect((await call(`${url}/metrics`)).status).toBe(500)
  })

  it('refuses requests beyond maxInFlight at once', async () => {
    let release!: () => void
    const gate = new Promise<void>(resolve => { release = resolve })
    const url = await start({ snapshot: async () => { await gate; return snapshot() } }, { maxInFlight: 1 })
    const first = call(`${url}/metrics`)
    await new Promise(resolve => setTimeout(resolve, 100))
    expect((await call(`${url}/metrics`)).status).toBe(429)
    release()
    expect((await first).status).toBe(200)
  })

  it('cuts a client that never finishes its headers after headersTimeoutMs', async () => {
    const url = await start({}, { headersTimeoutMs: 300, requestTimeoutMs: 600, timeoutCheckIntervalMs: 100 })
    const { port } = new URL(url)
    const closedAfter = await new Promise<number>((resolve, reject) => {
      const started = Date.now()
      const s = connect(Number(port), '127.0.0.1', () => { s.write('GET /metrics HTTP/1.1\r\nHost: x\r\n') })
      s.on('error', reject)
      s.resume()
      s.on('close', () => resolve(Date.now() - started))
    })
    expect(closedAfter).toBeLessThan(5_000)
  })
})
