/**
 * Cluster pull benchmark: N ∈ {1, 2, 4, 8} nodes, each in its own network namespace on one
 * bridge, read the same image at the same moment from an origin whose uplink is limited with
 * `tc` (tbf, `--rate-mbit`, 200 by default), so that sharing matters.
 *
 * - **ipfs-estargz**: the origin is a daemon holding the image (pushed to it); every node runs
 *   `ipfs-estargz mount` with the origin and every other node as static peers, in one private
 *   swarm, and reads every file of the mounted image (sha256 checked against the source).
 * - **registry** (the "no P2P" baseline): `docker-registry` on the origin behind the same limit;
 *   every node downloads and gunzips every layer blob of the gzip image (what a pull does before
 *   unpacking).
 *
 * For each N and each row it prints: the wall time until every node is done (from the moment
 * all are mounted, and from their start), the bytes the origin sent (its eth0 TX counter), the
 * bytes each node sent (eth0 TX: mostly blocks served to peers), and each process's peak RSS
 * (VmHWM; the processes run as installed: the bin's shebang settings). `--verbose` adds each
 * node's block statistics (where its blocks came from, hedges, pending answers, what it served).
 * Root, `ip`, `nsenter`, `tc`, FUSE; the registry row needs /usr/bin/docker-registry.
 *
 * usage: npm run bench:cluster -- [--nodes 1,2,4,8] [--rate-mbit 200] [--layers 4] [--layer-mib 16] [--no-registry] [--json] [--verbose]
 */
import '../../src/polyfill.js'
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { lstat, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { parseArgs, promisify } from 'node:util'
import { unmountUnder } from '../../src/fs/mountinfo.js'
import { createNode } from '../../src/ipfs/node.js'
import { silentLogger } from '../../src/logging.js'
import { NetnsLan } from '../fixtures/netns.js'
import { allBlobs, makeImage, tagged, writeLayout, type TestImage } from '../fixtures/oci-image.js'
import { REGISTRY_BIN } from '../fixtures/registry.js'
import { cliPath } from '../fixtures/tools.js'

const run = promisify(execFile)
const { values: args } = parseArgs({
  options: {
    nodes: { type: 'string', default: '1,2,4,8' },
    'rate-mbit': { type: 'string', default: '200' },
    layers: { type: 'string', default: '4' },
    'layer-mib': { type: 'string', default: '16' },
    'no-registry': { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
    verbose: { type: 'boolean', default: false },
    // internal: run in the origin's namespace to upload the image into the registry
    upload: { type: 'string' },
    layout: { type: 'string' }
  }
})

const PORT = 4001
const REGISTRY_PORT = 5000
const REPO_NAME = 'bench/image'

interface Proc { proc: ChildProcess, log: () => string, exited: Promise<number | null> }

function startIn (lan: NetnsLan, i: number, cmd: string[], ready?: string): Promise<Proc> {
  const [c, ...argv] = lan.wrap(i, cmd)
  const proc = spawn(c, argv, { stdio: ['ignore', 'ignore', 'pipe'] })
  let log = ''
  proc.stderr?.on('data', (d: Buffer) => { log = (log + d.toString()).slice(-1_000_000) })
  const exited = new Promise<number | null>(resolve => proc.on('exit', resolve))
  const p = { proc, log: () => log, exited }
  if (ready == null) return Promise.resolve(p)
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`${cmd.join(' ')} not ready in 120 s:\n${log.slice(-3000)}`)) }, 120_000)
    proc.stderr?.on('data', () => { if (log.includes(ready)) { clearTimeout(timer); resolve(p) } })
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`${cmd[0]} exited with ${String(code)}:\n${log.slice(-3000)}`)) })
  })
}

async function stop (p: Proc): Promise<void> {
  if (p.proc.exitCode == null && p.proc.signalCode == null) p.proc.kill('SIGTERM')
  const t = setTimeout(() => p.proc.kill('SIGKILL'), 30_000)
  await p.exited
  clearTimeout(t)
}

/** Peak RSS of a process (MiB), from /proc (nsenter execs the command: the pid is node's). */
async function peakRss (pid: number | undefined): Promise<number> {
  if (pid == null) return NaN
  const m = /VmHWM:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8').catch(() => ''))
  return m != null ? Math.round(Number(m[1]) / 1024) : NaN
}

async function txBytes (lan: NetnsLan, i: number): Promise<number> {
  const out = JSON.parse(await lan.exec(i, ['ip', '-s', '-j', 'link', 'show', 'eth0'])) as Array<{ stats64: { tx: { bytes: number } } }>
  return out[0].stats64.tx.bytes
}

async function tree (dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  const walk = async (d: string): Promise<void> => {
    for (const name of (await readdir(d)).sort()) {
      const p = join(d, name)
      const st = await lstat(p)
      if (st.isDirectory()) await walk(p)
      else if (st.isFile()) out.set(relative(dir, p), createHash('sha256').update(await readFile(p)).digest('hex'))
    }
  }
  await walk(dir)
  return out
}

/** Reads every file of a mount in a separate process (a FUSE mount must not be read by the process serving it; here another one does). */
async function readAll (mnt: string): Promise<void> {
  await run('sh', ['-c', 'find "$1" -type f -exec cat {} + > /dev/null', 'sh', mnt], { maxBuffer: 1 << 20 })
}

interface Row { what: string, n: number, wallSec: number, fromStartSec: number, originSentMiB: number, nodeSentMiB: number[], rssMiB: number[], originRssMiB: number }

async function uploadToRegistry (url: string, layout: string): Promise<void> {
  const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string, mediaType: string }> }
  const blob = async (d: string): Promise<Uint8Array<ArrayBuffer>> => new Uint8Array(await readFile(join(layout, 'blobs', 'sha256', d.slice(7))))
  const manifest = JSON.parse(Buffer.from(await blob(index.manifests[0].digest)).toString()) as { config: { digest: string }, layers: Array<{ digest: string }> }
  for (const d of [manifest.config.digest, ...manifest.layers.map(l => l.digest)]) {
    const start = await fetch(`${url}/v2/${REPO_NAME}/blobs/uploads/`, { method: 'POST' })
    const loc = new URL(start.headers.get('location') as string, url)
    loc.searchParams.set('digest', d)
    const put = await fetch(loc, { method: 'PUT', body: await blob(d), headers: { 'content-type': 'application/octet-stream' } })
    if (put.status !== 201) throw new Error(`upload of ${d}: ${put.status} ${await put.text()}`)
  }
  const put = await fetch(`${url}/v2/${REPO_NAME}/manifests/latest`, { method: 'PUT', body: await blob(index.manifests[0].digest), headers: { 'content-type': index.manifests[0].mediaType } })
  if (put.status !== 201) throw new Error(`manifest: ${put.status} ${await put.text()}`)
}

async function main (): Promise<void> {
  if (args.upload != null) { await uploadToRegistry(args.upload, args.layout as string); return }
  const ns = args.nodes.split(',').map(Number)
  const maxN = Math.max(...ns)
  const rate = Number(args['rate-mbit'])
  const lan = new NetnsLan('h14b', maxN + 1)
  const dir = await mkdtemp(join(tmpdir(), 'h14-bench-cluster-'))
  const running: Proc[] = []
  const rows: Row[] = []
  const cli = async (a: string[]): Promise<string> => (await run(process.execPath, [cliPath, ...a], { maxBuffer: 1 << 26 })).stdout
  try {
    await lan.up()
    await lan.exec(0, ['tc', 'qdisc', 'add', 'dev', 'eth0', 'root', 'tbf', 'rate', `${rate}mbit`, 'burst', '256kb', 'latency', '200ms'])
    await writeFile(join(dir, 'swarm.key'), await cli(['swarm', 'key', 'generate']), { mode: 0o600 })
    const image: TestImage = makeImage({ layerCount: Number(args.layers), layerSize: Number(args['layer-mib']) << 20, noise: true })
    await writeLayout(join(dir, 'img'), allBlobs(image), [tagged(image.manifest.descriptor, 'latest')])
    const imageBytes = image.layers.reduce((s, l) => s + l.bytes.length, 0)
    const src = join(dir, 'src')
    await mkdir(src)
    for (const [i, l] of image.layers.entries()) {
      await writeFile(join(dir, `layer-${i}.tar`), l.tar)
      await run('tar', ['-xf', join(dir, `layer-${i}.tar`), '-C', src])
    }
    const expected = await tree(src)
    const pushed = JSON.parse(await cli(['push', `oci:${join(dir, 'img')}`, '--repo', join(dir, 'origin'), '--json'])) as { root: string, images: Array<{ layers: Array<{ size: number }> }> }
    const root = pushed.root
    const esgzBytes = pushed.images[0].layers.reduce((s, l) => s + l.size, 0)
    const originId = (JSON.parse(await cli(['id', '--repo', join(dir, 'origin')])) as { id: string }).id
    const ipfsCfg = (i: number, peers: string[]): string =>
      `[ipfs]\nlisten = ["/ip4/${lan.addr(i)}/tcp/${PORT}"]\npeers = ${JSON.stringify(peers)}\nswarm_key_file = "${join(dir, 'swarm.key')}"\n`
    await writeFile(join(dir, 'origin.toml'), `${ipfsCfg(0, [])}[fuse_manager]\nenable = false\n[prefetch]\nenable = false\n`)

    for (const n of ns) {
      // ipfs-estargz row: a fresh origin daemon (same repo) and fresh node repos
      const origin = await startIn(lan, 0, [cliPath, 'daemon', '--root', join(dir, 'origin'), '--address', join(dir, 'origin', 's.sock'), '--config', join(dir, 'origin.toml')], 'snapshotter on')
      running.push(origin)
      const tx0 = await Promise.all(Array.from({ length: n + 1 }, async (_, i) => await txBytes(lan, i)))
      const ids: string[] = []
      // peer ids are fixed up front so every node can be given every other as a static peer
      for (let i = 1; i <= n; i++) {
        const repo = join(dir, `n${n}-${i}`, 'repo')
        await mkdir(join(dir, `n${n}-${i}`, 'mnt'), { recursive: true })
        // created here (`id` only reads an existing repo); the mount opens it with this peer id
        const node = await createNode({ repo, logger: silentLogger() })
        ids.push(node.peerId.toString())
        await node.stop()
      }
      const t0 = performance.now()
      const nodes = await Promise.all(Array.from({ length: n }, async (_, k) => {
        const i = k + 1
        const base = join(dir, `n${n}-${i}`)
        const peers = [`/ip4/${lan.addr(0)}/tcp/${PORT}/p2p/${originId}`, ...ids.flatMap((id, j) => j === k ? [] : [`/ip4/${lan.addr(j + 1)}/tcp/${PORT}/p2p/${id}`])]
        await writeFile(join(base, 'config.toml'), ipfsCfg(i, peers))
        const p = await startIn(lan, i, [cliPath, 'mount', root, join(base, 'mnt'), '--repo', join(base, 'repo'), '--config', join(base, 'config.toml'), '--log-level', 'info'], 'mounted at')
        running.push(p)
        return { p, mnt: join(base, 'mnt') }
      }))
      const t1 = performance.now()
      await Promise.all(nodes.map(async ({ mnt }) => { await readAll(mnt) }))
      const t2 = performance.now()
      for (const { mnt } of nodes) {
        const got = await tree(mnt)
        if (JSON.stringify([...got]) !== JSON.stringify([...expected])) throw new Error(`${mnt}: files differ from the source`)
      }
      const tx1 = await Promise.all(Array.from({ length: n + 1 }, async (_, i) => await txBytes(lan, i)))
      const rss = await Promise.all(nodes.map(async ({ p }) => await peakRss(p.proc.pid)))
      const originRss = await peakRss(origin.proc.pid)
      rows.push({ what: 'ipfs-estargz', n, wallSec: (t2 - t1) / 1000, fromStartSec: (t2 - t0) / 1000, originSentMiB: (tx1[0] - tx0[0]) / 2 ** 20, nodeSentMiB: tx1.slice(1).map((b, i) => (b - tx0[i + 1]) / 2 ** 20), rssMiB: rss, originRssMiB: originRss })
      for (const { p } of nodes) await stop(p)
      await stop(origin)
      printRow(rows[rows.length - 1])
      if (args.verbose) {
        for (const { p } of nodes) {
          const line = p.log().split('\n').reverse().find(l => l.includes('mount: block statistics'))
          if (line == null) continue
          const st = JSON.parse(line) as { fetched: Record<string, number>, exchange: Record<string, number>, peers: Record<string, Record<string, number>> }
          const mib = (b: number): string => (b / 2 ** 20).toFixed(1)
          console.log(`    fetched: exchange ${mib(st.fetched.exchangeBytes)} MiB, bitswap ${mib(st.fetched.bitswapBytes)} MiB, local ${mib(st.fetched.localBytes)} MiB; exchange: requests ${st.exchange.requests}, hedges ${st.exchange.hedges}, don't-haves ${st.exchange.dontHaves}, pending ${st.exchange.pendingAnswers}, served ${mib(st.exchange.servedBytes)} MiB (${st.exchange.servedAfterWait} after waiting, ${st.exchange.waitsInVain ?? 0} waits in vain, ${st.exchange.servedDontHaves} don't-haves), cooperative fetches ${st.exchange.cooperativeFetches ?? 0} (${mib(st.fetched.onBehalfBytes ?? 0)} MiB, ${st.exchange.cooperativeBusy ?? 0} refused at the limit; ${st.exchange.rankedDontHaves ?? 0} don't-haves to peers ranked above), from the origin ${mib(st.peers[originId]?.bytesReceived ?? 0)} MiB, failed ${st.exchange.failedRequests}`)
        }
      }

      // registry row
      if (!args['no-registry'] && existsSync(REGISTRY_BIN)) {
        const rdir = join(dir, 'registry')
        await writeFile(join(dir, 'registry.yml'), `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${rdir}\nhttp:\n  addr: ${lan.addr(0)}:${REGISTRY_PORT}\n  secret: bench\n`)
        const reg = await startIn(lan, 0, [REGISTRY_BIN, 'serve', join(dir, 'registry.yml')])
        running.push(reg)
        const url = `http://${lan.addr(0)}:${REGISTRY_PORT}`
        for (let i = 0; i < 100; i++) {
          try { await lan.exec(0, ['curl', '-sf', `${url}/v2/`]); break } catch { await new Promise(resolve => setTimeout(resolve, 100)) }
        }
        if (!existsSync(rdir)) {
          await run('nsenter', [`--net=/run/netns/${lan.ns(0)}`, process.execPath, '--import', 'tsx', import.meta.filename, '--upload', url, '--layout', join(dir, 'img')])
        }
        const rtx0 = await Promise.all(Array.from({ length: n + 1 }, async (_, i) => await txBytes(lan, i)))
        const blobs = image.layers.map(l => l.descriptor.digest)
        const r0 = performance.now()
        await Promise.all(Array.from({ length: n }, async (_, k) => {
          const script = blobs.map(d => `curl -sf ${url}/v2/${REPO_NAME}/blobs/${d} | gzip -dc > /dev/null`).join(' && ')
          await lan.exec(k + 1, ['sh', '-c', script])
        }))
        const r1 = performance.now()
        const rtx1 = await Promise.all(Array.from({ length: n + 1 }, async (_, i) => await txBytes(lan, i)))
        rows.push({ what: 'registry', n, wallSec: (r1 - r0) / 1000, fromStartSec: (r1 - r0) / 1000, originSentMiB: (rtx1[0] - rtx0[0]) / 2 ** 20, nodeSentMiB: rtx1.slice(1).map((b, i) => (b - rtx0[i + 1]) / 2 ** 20), rssMiB: [], originRssMiB: await peakRss(reg.proc.pid) })
        await stop(reg)
        printRow(rows[rows.length - 1])
      }
    }
    const summary = { rateMbit: rate, imageGzipMiB: imageBytes / 2 ** 20, imageEstargzMiB: esgzBytes / 2 ** 20, files: expected.size, rows }
    if (args.json) console.log(JSON.stringify(summary))
    else console.log(`\nimage: ${expected.size} files, gzip ${(imageBytes / 2 ** 20).toFixed(1)} MiB, eStargz ${(esgzBytes / 2 ** 20).toFixed(1)} MiB; origin uplink ${rate} Mbit/s`)
  } finally {
    for (const p of running.reverse()) await stop(p).catch(() => {})
    lan.down()
    await unmountUnder(dir).catch(() => {})
    await rm(dir, { recursive: true, force: true }).catch(() => {})
  }
}

function printRow (r: Row): void {
  const f = (x: number): string => Number.isFinite(x) ? x.toFixed(1) : '-'
  console.log(`${r.what.padEnd(13)} N=${String(r.n).padEnd(2)} wall ${f(r.wallSec).padStart(6)} s (from start ${f(r.fromStartSec)} s)  origin sent ${f(r.originSentMiB).padStart(7)} MiB  nodes sent [${r.nodeSentMiB.map(f).join(', ')}] MiB  peak RSS [${r.rssMiB.map(String).join(', ')}] MiB, origin ${String(r.originRssMiB)} MiB`)
}

await main()
