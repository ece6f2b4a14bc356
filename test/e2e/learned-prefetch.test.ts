import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CID } from 'multiformats/cid'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { collectBlock } from '../../src/ipfs/dag-reader.js'
import { createNode } from '../../src/ipfs/node.js'
import { silentLogger } from '../../src/logging.js'
import { decodeRecord } from '../../src/prefetch-record/record.js'
import { DEFAULTS as PREFETCH_DEFAULTS, pieces } from '../../src/prefetch-record/prefetch.js'
import { FuseManagerClient, type RangePrefetchStats } from '../../src/fusemgr/index.js'
import { containerdNeeds, startContainerd, type PrivateContainerd } from '../../scripts/fixtures/containerd.js'
import { startDaemon, type RunningDaemon } from '../../scripts/fixtures/daemon.js'
import { debianImageNeeds } from '../../scripts/fixtures/debian-image.js'
import { pushedDebianRepo } from '../../scripts/fixtures/pushed-debian.js'
import { hasCommand, hasFuse, needs } from '../helpers/env.js'
import { leafMap } from '../ipfs/helpers.js'
import { removeWorkDir } from '../../scripts/fixtures/work-dir.js'
import { runCli as cli } from '../../scripts/fixtures/run.js'

/**
 * Learned prefetch on real parts: node A holds the pushed Debian + python3 image; node B pulls
 * it from A and runs a workload through its containerd, records the order of its first reads and
 * publishes it; node C, peered with A and B, pulls the same image: it fetches B's record and its
 * FUSE manager caches the recorded ranges before C's container reads them. Checked at the source
 * (A's block exchange log: what C asked for, in which order) and in C's counters (its mounts
 * asked its daemon for a fraction of the blocks B's asked for).
 */

const WORKLOAD = ['python3', '-c', 'import json, email, decimal; print(json.dumps({"ok": str(decimal.Decimal("1.1") + decimal.Decimal("2.2"))}))']
const EXPECTED = '{"ok": "3.3"}'

type Line = Record<string, unknown> & { msg?: string, time?: number }

/** Every JSON log line a daemon writes from now on (the fixture keeps only its last 200 kB). */
function collectLog (d: RunningDaemon): Line[] {
  const lines: Line[] = []
  let rest = ''
  d.proc.stderr?.on('data', (chunk: Buffer) => {
    const parts = (rest + chunk.toString()).split('\n')
    rest = parts.pop() ?? ''
    for (const p of parts) { try { lines.push(JSON.parse(p) as Line) } catch {} }
  })
  return lines
}

const idOf = async (root: string): Promise<{ id: string, address: string }> => {
  const r = JSON.parse((await cli(['id', '--repo', root])).stdout) as { id: string, addresses: string[] }
  return { id: r.id, address: r.addresses[0] }
}

async function until (cond: () => boolean, what: string, ms: number): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 200))
  }
}

describe.skipIf(needs({ ...containerdNeeds, ...debianImageNeeds, fuse: hasFuse, fusermount: hasCommand('fusermount') }))('learned prefetch: the next node fetches in the order the last one read', () => {
  let dir: string
  let a: RunningDaemon | undefined
  let b: RunningDaemon | undefined
  let c: RunningDaemon | undefined
  let ctrdB: PrivateContainerd | undefined
  let ctrdC: PrivateContainerd | undefined
  let bLog: Line[]
  let cLog: Line[]
  let root: string
  let layerCids: string[]
  let peerA: { id: string, address: string }
  let peerB: { id: string, address: string }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'e2e-learned-'))
    root = (await pushedDebianRepo(join(dir, 'a'))).root
    a = await startDaemon({ root: join(dir, 'a'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    peerA = await idOf(join(dir, 'a'))
    // B publishes its records 20 s after each layer's first read; no background fetch, so that
    // B's reads (and blocks) are the workload's. C asks both A and B for blocks.
    b = await startDaemon({ root: join(dir, 'b'), listen: ['/ip4/127.0.0.1/tcp/0'], peers: [peerA.address], config: '[fs]\nbackground_fetch = false\n[prefetch]\nrecord_window_sec = 20\n', logLevel: 'debug' })
    bLog = collectLog(b)
    peerB = await idOf(join(dir, 'b'))
    ctrdB = await startContainerd({ proxyPlugins: { 'ipfs-estargz': b.address } })
  }, 900_000)

  afterAll(async () => {
    await ctrdC?.stop()
    await ctrdB?.stop()
    await c?.stop()
    await b?.stop()
    await a?.stop()
    if (dir != null) await removeWorkDir(dir)
  })

  it('B runs the workload, records the order of its first reads per layer and publishes it', async () => {
    const ctrd = ctrdB as PrivateContainerd
    const pulled = await cli(['pull', `ipfs://${root}`, '--repo', join(dir, 'b'), '--address', ctrd.address, '--json', '--require-lazy'])
    expect(pulled.code, pulled.stderr).toBe(0)
    const result = JSON.parse(pulled.stdout) as { name: string, layers: Array<{ lazy: boolean, cid: string }> }
    layerCids = result.layers.map(l => l.cid)
    expect(result.layers.every(l => l.lazy)).toBe(true)
    const out = await ctrd.ctr(['run', '--rm', '--snapshotter', 'ipfs-estargz', result.name, 'learned-b', ...WORKLOAD], { timeoutMs: 300_000 })
    expect(out.trim()).toBe(EXPECTED)
    // both layers were read by the workload: each gets a record when its window ends
    await until(() => bLog.filter(l => l.msg === 'prefetch record published').length === layerCids.length, 'B\'s records', 120_000)
    const published = bLog.filter(l => l.msg === 'prefetch record published')
    expect(published.map(l => l.layer).sort()).toEqual([...layerCids].sort())
    for (const p of published) expect(p.ranges as number).toBeGreaterThanOrEqual(3)
  }, 600_000)

  it('C fetches B\'s records and prefetches their ranges, in order, before its container reads them', async () => {
    // a generous ask timeout: on a loaded machine the default 300 ms (a mount does not wait for the
    // ask) can pass before a peer answers, and this test is about the order, not the ask's speed
    c = await startDaemon({ root: join(dir, 'c'), peers: [peerA.address, peerB.address], config: '[fs]\nbackground_fetch = false\n[prefetch]\nask_timeout_sec = 10\n', logLevel: 'debug' })
    // C at debug level: its block exchange logs every request it sends, with the CIDs in order
    cLog = collectLog(c)
    ctrdC = await startContainerd({ proxyPlugins: { 'ipfs-estargz': c.address } })
    const ctrd = ctrdC
    const t0 = Date.now()
    const pulled = await cli(['pull', `ipfs://${root}`, '--repo', join(dir, 'c'), '--address', ctrd.address, '--json', '--require-lazy'])
    expect(pulled.code, pulled.stderr).toBe(0)
    const tPulled = Date.now()
    const result = JSON.parse(pulled.stdout) as { name: string }
    // the prefetch runs beside the pull, in the FUSE manager (its chunk cache is where the mounts
    // read first); the container starts when it is done (it could start earlier: its reads go
    // first) so that what is checked below is the prefetch's own order
    const manager = new FuseManagerClient(join(dir, 'c', 'fuse-manager.sock'))
    let prefetch: RangePrefetchStats | undefined
    const deadline = Date.now() + 120_000
    while ((prefetch = (await manager.health()).prefetch)?.finished !== layerCids.length) {
      if (Date.now() > deadline) throw new Error(`C's FUSE manager did not finish the learned prefetches: ${JSON.stringify(prefetch)}`)
      await new Promise(resolve => setTimeout(resolve, 200))
    }
    expect(prefetch).toMatchObject({ requests: layerCids.length, started: layerCids.length, failed: 0 })
    expect(prefetch?.bytes).toBeGreaterThan(0)
    const tRun = Date.now()
    const out = await ctrd.ctr(['run', '--rm', '--snapshotter', 'ipfs-estargz', result.name, 'learned-c', ...WORKLOAD], { timeoutMs: 300_000 })
    const tDone = Date.now()
    expect(out.trim()).toBe(EXPECTED)

    // C used B's record for every layer, the one B published
    const published = new Map(bLog.filter(l => l.msg === 'prefetch record published').map(l => [l.layer as string, l.record as string]))
    const prefetched = cLog.filter(l => l.msg === 'learned order handed to the mounts\' cache')
    expect(prefetched.map(l => [l.layer, l.record, l.from]).sort()).toEqual(layerCids.map(l => [l, published.get(l), peerB.id]).sort())
    await (c as RunningDaemon).stop()
    c = undefined
    const counters = cLog.find(l => l.msg === 'learned prefetch: counters at stop') as Record<string, number>
    expect(counters).toMatchObject({ recordsFetched: layerCids.length, recordsUsed: layerCids.length, recordsRejected: 0, handedOff: layerCids.length, handOffFallbacks: 0 })
    const onDemand = counters.onDemandLocalBlocks + counters.onDemandNetworkBlocks
    console.log(`C: pull ${tPulled - t0} ms, prefetch done ${tRun - t0} ms after the pull started, run ${tDone - tRun} ms; ` +
      `prefetched ${((prefetch?.bytes ?? 0) / 1e6).toFixed(1)} MB in ${prefetch?.chunks ?? 0} chunks into the FUSE manager's cache; ` +
      `blocks C's mounts asked the daemon for on demand: ${onDemand}`)

    // at the sources: what C asked A and B for, in order, follows B's records
    await ctrdC?.stop()
    ctrdC = undefined
    await ctrdB?.stop()
    ctrdB = undefined
    await b?.stop()
    b = undefined
    // what C's mounts still had to ask for on demand (footers, TOCs, reads the record missed),
    // against B's, which ran the same workload with nothing prefetched
    const bCounters = bLog.find(l => l.msg === 'learned prefetch: counters at stop') as Record<string, number>
    const bOnDemand = bCounters.onDemandLocalBlocks + bCounters.onDemandNetworkBlocks
    console.log(`on-demand blocks: C ${onDemand}, B ${bOnDemand}`)
    expect(onDemand).toBeLessThan(bOnDemand * 0.25)
    await a?.stop()
    a = undefined
    // what C asked A and B for before its container ran, in the order C sent it (its own log: the
    // sources' logs would add each process's own delays under load). A block asked again (a hedge
    // to the other source, a retry after a timeout) counts only at its first ask, which is the order
    // C's prefetch chose; the later asks say how the fetch coped with load, not the order
    const sourceOf = new Map([[peerA.id, 'A'], [peerB.id, 'B']] as const)
    const seen = new Set<string>()
    const firstAsks = cLog
      .filter(l => l.msg === 'block exchange: asking' && sourceOf.has(l.peer as string) && (l.time as number) < tRun)
      .flatMap(l => (l.cids as string[]).map(cid => ({ cid, source: sourceOf.get(l.peer as string) as 'A' | 'B' })))
      .filter(({ cid }) => !seen.has(cid) && seen.add(cid) != null)
    const nodeA = await createNode({ repo: join(dir, 'a'), logger: silentLogger() })
    const nodeC = await createNode({ repo: join(dir, 'c'), logger: silentLogger() })
    try {
      let recordedLeaves = 0
      const asked = new Set<string>()
      const tally = { A: 0, B: 0, pairs: 0, ordered: 0 }
      for (const layer of layerCids) {
        const recordCid = CID.parse(published.get(layer) as string)
        const leaves = await leafMap(async (x) => await collectBlock(nodeA.localBlockstore.get(x)), CID.parse(layer))
        const size = leaves.reduce((n, l) => n + l.size, 0)
        const record = decodeRecord(await collectBlock(nodeC.localBlockstore.get(recordCid)), { layer, size, now: Date.now() })
        // each leaf's place in the record: the first piece of the prefetch that reads it
        const place = new Map<string, number>()
        for (const [i, [offset, length]] of pieces(record.ranges, PREFETCH_DEFAULTS.pieceBytes).entries()) {
          for (const l of leaves) {
            if (l.offset < offset + length && offset < l.offset + l.size && !place.has(l.cid.toString())) place.set(l.cid.toString(), i)
          }
        }
        recordedLeaves += place.size
        // every recorded leaf is in C's blockstore
        for (const cid of place.keys()) expect(await nodeC.localBlockstore.has(CID.parse(cid)), cid).toBe(true)
        // the first ask for each recorded leaf, by its place in the record: within the prefetch's
        // concurrency of the furthest piece asked so far
        // each recorded leaf's place, in the order C first asked for it
        const places: number[] = []
        for (const { cid, source } of firstAsks) {
          const p = place.get(cid)
          if (p == null) continue
          asked.add(cid)
          tally[source]++
          places.push(p)
        }
        // how many pairs of asks came in record order (a piece still in flight while later ones
        // start and end asks its last leaves after theirs: order is judged over all pairs, not
        // each ask against the furthest so far)
        for (let i = 0; i < places.length; i++) {
          for (let j = i + 1; j < places.length; j++) {
            tally.pairs++
            if (places[i] <= places[j]) tally.ordered++
          }
        }
      }
      console.log(`of the ${recordedLeaves} recorded leaves, C asked for ${asked.size} before its container ran (${tally.A} first of A, ${tally.B} first of B); ` +
        `${tally.ordered} of ${tally.pairs} pairs of asks in record order`)
      // C asked for (nearly) every recorded leaf before its container ran, in record order (a
      // random order would put half the pairs in order, the reverse none)
      expect(asked.size / recordedLeaves).toBeGreaterThanOrEqual(0.9)
      expect(tally.ordered / tally.pairs).toBeGreaterThanOrEqual(0.9)
    } finally {
      await nodeA.stop()
      await nodeC.stop()
    }
  }, 900_000)
})
