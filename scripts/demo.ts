// The demo behind `npm run demo` (scripts/demo.sh installs what is missing and builds first):
// what the project is for, on this machine. Node A publishes an image built from local files;
// node B mounts it lazily from A, reads a few files, and shows how few bytes it fetched, and from
// where; then (with containerd and runc) B's daemon serves containerd as its snapshotter and a
// container runs from the lazy layers. Everything runs under a temp dir, removed at the end.
//
//   npm run demo [-- --image auto|debian|project]
//
// --image debian: a Debian bookworm rootfs with python3 (debootstrap; built once, then cached);
// --image project: this project's files over a minimal root made of the host's sh, cat and head;
// auto (default): debian when root and debootstrap are there, else project.
//
// It fails (exit 1) when a lazy path falls back: the mount fetches most of the image, no byte
// comes from the peer, or a layer containerd pulls is not mounted lazily.
import { execFile, execFileSync, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { promisify } from 'node:util'
import { gzipSync } from 'node:zlib'
import { formatTable } from '../src/cli/table.js'
import { containerdNeeds, startContainerd, type PrivateContainerd } from './fixtures/containerd.js'
import { startDaemon, type RunningDaemon } from './fixtures/daemon.js'
import { debianImageNeeds, debianPythonImage } from './fixtures/debian-image.js'
import { hasFuse, isRoot } from './fixtures/env.js'
import { cliPath, repoRoot } from './fixtures/tools.js'

const run = promisify(execFile)

/** The demo's limits, in one place. */
const DEFAULTS = {
  /** The mount fetching more than this share of the image's compressed bytes is not lazy. */
  maxLazyShare: 0.5,
  /** Seconds for the mount to come up. */
  mountTimeoutSec: 120
} as const

class DemoFailure extends Error {}

const mode = ((): 'auto' | 'debian' | 'project' => {
  const i = process.argv.indexOf('--image')
  const v = i >= 0 ? process.argv[i + 1] : (process.argv.find(a => a.startsWith('--image='))?.slice('--image='.length) ?? 'auto')
  if (v !== 'auto' && v !== 'debian' && v !== 'project') { console.error('usage: npm run demo [-- --image auto|debian|project]'); process.exit(2) }
  return v
})()

const say = (s = ''): void => { process.stdout.write(`${s}\n`) }
const step = (n: number, title: string): void => say(`\n== ${n}. ${title}`)
const table = (header: string[], rows: string[][]): void => { for (const line of formatTable(header, rows).trimEnd().split('\n')) say(`   ${line}`) }
const mb = (n: number): string => n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(1)} kB`
const secs = (ms: number): string => `${(ms / 1000).toFixed(2)} s`
const pct = (a: number, b: number): string => `${(100 * a / b).toFixed(1)} %`
const sha = (b: Uint8Array): string => 'sha256:' + createHash('sha256').update(b).digest('hex')

async function cli (args: string[]): Promise<string> {
  try {
    return (await run(process.execPath, [cliPath, ...args], { maxBuffer: 1 << 28 })).stdout
  } catch (err) {
    throw new DemoFailure(`ipfs-estargz ${args.join(' ')} failed: ${(err as { stderr?: string }).stderr?.trim() ?? String(err)}`)
  }
}

async function timed<T> (fn: () => Promise<T>): Promise<[T, number]> {
  const t = performance.now()
  const v = await fn()
  return [v, performance.now() - t]
}

/** A gzip layer of everything under `dir`, made by tar (sorted, owned by root). */
function layerOf (dir: string): { gz: Buffer, diffId: string } {
  const tar = execFileSync('tar', ['-C', dir, '--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '-cf', '-', '.'], { maxBuffer: 1 << 30 })
  return { gz: gzipSync(tar), diffId: sha(tar) }
}

/**
 * The fallback image, from files on any Debian machine: layer 1 a minimal root (the host's sh,
 * cat, head and ls with the libraries ldd names), layer 2 this project's sources under /app.
 */
function projectImage (dir: string): { ref: string, run: string[], files: Array<{ path: string, local?: string }> } {
  const base = join(dir, 'rootfs-base')
  const app = join(dir, 'rootfs-app')
  for (const bin of ['/bin/sh', '/bin/cat', '/usr/bin/head', '/bin/ls']) {
    const files = new Set([bin])
    for (const m of execFileSync('ldd', [bin], { encoding: 'utf8' }).matchAll(/(\/\S+) \(0x/g)) files.add(m[1])
    for (const f of files) {
      mkdirSync(join(base, dirname(f)), { recursive: true })
      copyFileSync(realpathSync(f), join(base, f))
    }
  }
  mkdirSync(join(app, 'app'), { recursive: true })
  execFileSync('cp', ['-r', join(repoRoot, 'src'), join(repoRoot, 'docs'), join(repoRoot, 'README.md'), join(repoRoot, 'package.json'), join(app, 'app')])
  const layers = [layerOf(base), layerOf(app)]
  const config = Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: layers.map(l => l.diffId) },
    history: [{ created_by: 'npm run demo: sh, cat, head, ls' }, { created_by: 'npm run demo: the project\'s files' }]
  }))
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
    layers: layers.map(l => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha(l.gz), size: l.gz.length }))
  }))
  const layout = join(dir, 'image')
  mkdirSync(join(layout, 'blobs', 'sha256'), { recursive: true })
  for (const b of [...layers.map(l => l.gz), config, manifest]) writeFileSync(join(layout, 'blobs', 'sha256', sha(b).slice(7)), b)
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }))
  writeFileSync(join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha(manifest), size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': 'demo' } }] }))
  return {
    ref: `oci:${layout}:demo`,
    run: ['/bin/sh', '-c', 'echo "hello from a container on lazy layers"; head -n 1 /app/README.md'],
    files: ['app/package.json', 'app/README.md', 'app/src/cli/main.ts', 'bin/sh'].map(path => ({ path, local: path.startsWith('app/') ? join(app, path) : undefined }))
  }
}

/** Waits for `text` on a child's stderr. */
async function waitFor (child: ReturnType<typeof spawn>, text: string, timeoutMs: number): Promise<string> {
  let err = ''
  child.stderr?.setEncoding('utf8').on('data', (s: string) => { err += s })
  const deadline = Date.now() + timeoutMs
  while (!err.includes(text)) {
    if (child.exitCode != null || Date.now() > deadline) throw new DemoFailure(`mount did not come up:\n${err.slice(-4000)}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  return err
}

interface Fetched { localBytes: number, localBlocks: number, exchangeBytes: number, exchangeBlocks: number, bitswapBytes: number, bitswapBlocks: number, gatewayBytes: number, gatewayBlocks: number }

/** Bytes by source as a table, and the bytes that came over the network. */
function bySource (f: Fetched, imageBytes: number, peer: string): number {
  const network = f.exchangeBytes + f.bitswapBytes + f.gatewayBytes
  table(['SOURCE', 'BYTES', 'BLOCKS', 'OF THE IMAGE'], [
    ['local blockstore', mb(f.localBytes), String(f.localBlocks), pct(f.localBytes, imageBytes)],
    [`peer ${peer.slice(-8)} (block exchange)`, mb(f.exchangeBytes), String(f.exchangeBlocks), pct(f.exchangeBytes, imageBytes)],
    ['peers (bitswap)', mb(f.bitswapBytes), String(f.bitswapBlocks), pct(f.bitswapBytes, imageBytes)],
    ['gateways', mb(f.gatewayBytes), String(f.gatewayBlocks), pct(f.gatewayBytes, imageBytes)],
    ['fetched over the network', mb(network), '', pct(network, imageBytes)],
    ['image (compressed layers)', mb(imageBytes), '', '100.0 %']
  ])
  return network
}

async function main (): Promise<void> {
  if (!isRoot() || !hasFuse()) throw new DemoFailure('the demo mounts images through FUSE: run it as root on a machine with /dev/fuse')
  const work = mkdtempSync(join(tmpdir(), 'ipfs-estargz-demo-'))
  const daemons: RunningDaemon[] = []
  let ctrd: PrivateContainerd | undefined
  let mountProc: ReturnType<typeof spawn> | undefined
  const mnt = join(work, 'mnt')
  try {
    const useDebian = mode === 'debian' || (mode === 'auto' && Object.values(debianImageNeeds).every(ok => ok()))
    step(1, useDebian ? 'an image: Debian bookworm + python3 (debootstrap; built once, then cached)' : 'an image of local files: a minimal root (the host\'s sh, cat, head, ls) + this project\'s sources')
    const [image, buildMs] = await timed(async () => {
      if (!useDebian) return projectImage(work)
      const d = await debianPythonImage()
      return {
        ref: `oci:${d.layout}`,
        run: ['python3', '-c', 'import sys; print("hello from python", sys.version.split()[0], "on lazy layers")'],
        files: [{ path: 'etc/os-release' }, { path: 'usr/bin/python3' }, { path: 'usr/lib/python3.11/json/__init__.py' }]
      }
    })
    say(`   ${image.ref} (${secs(buildMs)})`)

    step(2, 'node A: a daemon that publishes the image (push: convert to eStargz, add to IPFS)')
    const a = await startDaemon({ root: join(work, 'a'), listen: ['/ip4/127.0.0.1/tcp/0'], config: '[fuse_manager]\nenable = false\n', logLevel: 'warn' })
    daemons.push(a)
    const [pushedText, pushMs] = await timed(async () => await cli(['push', image.ref, '--repo', a.root, '--json']))
    const pushed = JSON.parse(pushedText) as { root: string, images: Array<{ layers: Array<{ digest: string, cid: string, size: number, uncompressedSize: number }> }> }
    const layers = pushed.images[0].layers
    const imageBytes = layers.reduce((n, l) => n + l.size, 0)
    const idA = JSON.parse(await cli(['id', '--repo', a.root])) as { id: string, addresses: string[] }
    table(['LAYER', 'ESTARGZ', 'UNPACKED', 'CID'], layers.map(l => [l.digest.slice(7, 19), mb(l.size), mb(l.uncompressedSize), l.cid]))
    say(`   root CID ${pushed.root}, pushed in ${secs(pushMs)}; node A is ${idA.addresses[0]}`)

    step(3, 'node B: mounts the image lazily from node A (ipfs-estargz mount, no background fetch)')
    mkdirSync(mnt)
    const repoB = join(work, 'b')
    const startedMount = performance.now()
    mountProc = spawn(process.execPath, [cliPath, 'mount', pushed.root, mnt, '--repo', repoB, '--peer', idA.addresses[0], '--no-background-fetch', '--log-level', 'info'], { stdio: ['ignore', 'ignore', 'pipe'] })
    const exited = new Promise<number | null>(resolve => mountProc?.on('exit', resolve))
    let mountLog = ''
    mountProc.stderr?.setEncoding('utf8').on('data', (s: string) => { mountLog += s })
    await waitFor(mountProc, 'mounted at', DEFAULTS.mountTimeoutSec * 1000)
    say(`   mounted at ${mnt} in ${secs(performance.now() - startedMount)} (${layers.length} layers: footers and TOCs only)`)
    const rows: string[][] = []
    for (const f of image.files) {
      const at = join(mnt, f.path)
      const [bytes, cold] = await timed(async () => (await run('cat', [at], { encoding: 'buffer', maxBuffer: 1 << 30 })).stdout)
      const [, warm] = await timed(async () => await run('cat', [at], { encoding: 'buffer', maxBuffer: 1 << 30 }))
      const same = f.local != null ? (Buffer.compare(bytes, readFileSync(f.local)) === 0 ? 'identical to the source' : 'DIFFERS from the source') : `sha256 ${sha(bytes).slice(7, 19)}`
      if (same.startsWith('DIFFERS')) throw new DemoFailure(`${f.path} read through the mount differs from the file it was built from`)
      rows.push([`/${f.path}`, mb(bytes.length), secs(cold), secs(warm), same])
    }
    table(['FILE READ ON B', 'SIZE', 'FIRST READ', 'AGAIN', 'CONTENT'], rows)
    await cli(['umount', mnt]) // no --repo: umount finds the mount by its mountpoint
    if (await exited !== 0) throw new DemoFailure(`the mount process failed:\n${mountLog.slice(-4000)}`)
    mountProc = undefined
    const statsLine = mountLog.split('\n').find(l => l.includes('"mount: block statistics"'))
    if (statsLine == null) throw new DemoFailure('the mount process did not report its block statistics')
    const fetched = (JSON.parse(statsLine) as { fetched: Fetched }).fetched
    say('   bytes node B fetched to mount the image and read those files:')
    const network = bySource(fetched, imageBytes, idA.id)
    if (fetched.exchangeBytes + fetched.bitswapBytes === 0) throw new DemoFailure('node B fetched nothing from node A: the lazy path did not go through the peer')
    if (network > DEFAULTS.maxLazyShare * imageBytes) throw new DemoFailure(`node B fetched ${pct(network, imageBytes)} of the image to read a few files: the mount is not lazy`)

    step(4, 'containerd: node B\'s daemon as its snapshotter; pull by CID (every layer lazy) and run')
    if (!Object.values(containerdNeeds).every(ok => ok())) {
      say('   skipped: install containerd and runc (apt-get install containerd runc) to see this step')
    } else {
      const b = await startDaemon({ root: repoB, peers: [idA.addresses[0]], config: '[fuse_manager]\nenable = false\n[fs]\nbackground_fetch = false\n', logLevel: 'warn' })
      daemons.push(b)
      ctrd = await startContainerd({ proxyPlugins: { 'ipfs-estargz': b.address } })
      const [pulledText, pullMs] = await timed(async () => await cli(['pull', `ipfs://${pushed.root}`, '--repo', b.root, '--address', ctrd?.address ?? '', '--require-lazy', '--json']))
      const pulled = JSON.parse(pulledText) as { name: string, layers: Array<{ digest: string, lazy: boolean, fallbackReason?: string }> }
      table(['LAYER', 'IN CONTAINERD'], pulled.layers.map(l => [l.digest.slice(7, 19), l.lazy ? 'lazy (remote snapshot)' : `DOWNLOADED: ${l.fallbackReason ?? 'fell back'}`]))
      if (!pulled.layers.every(l => l.lazy)) throw new DemoFailure('a layer fell back to a full download')
      say(`   pulled ${pulled.name} in ${secs(pullMs)}`)
      const [out, runMs] = await timed(async () => await (ctrd as PrivateContainerd).ctr(['run', '--rm', '--snapshotter', 'ipfs-estargz', pulled.name, 'ipfs-estargz-demo', ...image.run], { timeoutMs: 120_000 }))
      say(`   $ ctr run --snapshotter ipfs-estargz ${pulled.name} ${image.run.map(a => a.includes(' ') ? `'${a}'` : a).join(' ')}   (${secs(runMs)})`)
      for (const line of out.trimEnd().split('\n')) say(`   | ${line}`)
      const stats = JSON.parse(await cli(['stats', '--json', '--repo', b.root])) as { fetched?: Record<string, { bytes: number, blocks: number }> }
      if (stats.fetched != null) {
        say('   bytes node B\'s daemon read for the pull and the run (blocks the mount fetched are local now):')
        const f = stats.fetched
        bySource({ localBytes: f.local.bytes, localBlocks: f.local.blocks, exchangeBytes: f.exchange.bytes, exchangeBlocks: f.exchange.blocks, bitswapBytes: f.bitswap.bytes, bitswapBlocks: f.bitswap.blocks, gatewayBytes: f.gateway.bytes, gatewayBlocks: f.gateway.blocks }, imageBytes, idA.id)
      }
    }
    step(5, 'cleaning up (containerd, both nodes, the temp dir)')
  } finally {
    if (mountProc != null) { mountProc.kill('SIGTERM'); await new Promise(resolve => setTimeout(resolve, 2000)) }
    await run('umount', ['-l', mnt]).catch(() => {})
    await ctrd?.stop().catch(() => {})
    for (const d of daemons.reverse()) await d.stop().catch(() => {})
    await new Promise(resolve => setTimeout(resolve, 1000)) // Helia writes its peer record just after stop
    if (existsSync(work) && statSync(work).isDirectory()) rmSync(work, { recursive: true, force: true })
  }
  say('   done. Next: docs/operations.md runs the daemon for a real containerd; `ipfs-estargz --help` lists every command.')
}

try {
  await main()
} catch (err) {
  process.stderr.write(`\ndemo FAILED: ${err instanceof DemoFailure ? err.message : (err as Error).stack ?? String(err)}\n`)
  process.exitCode = 1
}
