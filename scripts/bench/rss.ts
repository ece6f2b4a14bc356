/**
 * Memory benchmark (issue 4): peak RSS of the processes serving the debootstrap+python3 image
 * lazily, once every file of it has been read.
 *
 * Two daemons over loopback: A holds the pushed image; B (the measured node) mounts every layer
 * lazily through containerd's Snapshots API (Prepare with the remote labels, as containerd's
 * unpacker does), the chain is merged with overlayfs as containerd would, and every regular file
 * is read once with `cat`. Then the peak RSS (VmHWM), RSS and PSS (shared pages split between
 * the processes that map them: both run the same node binary) of B's daemon and of its FUSE
 * manager (which holds the mounts) are printed, side by side for B's daemon run as
 * `node bin/ipfs-estargz.js daemon` (node's defaults) and as the installed `ipfs-estargz daemon`
 * (the bin's shebang sets a 2 MiB semi-space and 2 malloc arenas; the manager always gets
 * them). Goal: ≤ 250 MB.
 *
 * Peaks depend on when V8 collects, so each setting runs `--runs` times (fresh node each time);
 * the table gives the median run (by total PSS) and the range.
 *
 * usage: npx tsx scripts/bench/rss.ts [--runs 3] [--background-fetch]     (as root; scripts/bench/rss.sh builds first)
 */
import '../../src/polyfill.js'
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdir, mkdtemp, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { FuseManagerClient } from '../../src/fusemgr/index.js'
import { startDaemon } from '../fixtures/daemon.js'
import { debianPythonImage } from '../fixtures/debian-image.js'
import { cliPath } from '../fixtures/tools.js'
import { snapshotsClient } from '../fixtures/snapshots-client.js'
import { chainIds } from '../fixtures/digest.js'
import { removeWorkDir } from '../fixtures/work-dir.js'

const { values } = parseArgs({ options: { 'background-fetch': { type: 'boolean', default: false }, runs: { type: 'string', default: '3' } } })
const runs = Number(values.runs)

function cli (args: string[]): string {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 })
  if (r.status !== 0) throw new Error(`ipfs-estargz ${args.join(' ')}: ${r.stderr}`)
  return r.stdout
}

async function memKB (pid: number): Promise<{ hwm: number, rss: number, pss: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const smaps = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8')
  const field = (text: string, name: string): number => Number((new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text) ?? [])[1])
  return { hwm: field(status, 'VmHWM'), rss: field(status, 'VmRSS'), pss: field(smaps, 'Pss') }
}

interface Sample { label: string, files: number, seconds: number, daemon: { hwm: number, rss: number, pss: number }, manager: { hwm: number, rss: number, pss: number } }

const image = await debianPythonImage()
const work = await mkdtemp(join(tmpdir(), 'bench-rss-'))
const a = await startDaemon({ root: join(work, 'a'), listen: ['/ip4/127.0.0.1/tcp/0'] })
const samples: Sample[] = []
let layers: Array<{ cid: string, tocDigest: string, diffID: string, size: number }> = []
try {
  process.stderr.write('pushing the image on node A...\n')
  const pushed = JSON.parse(cli(['push', `oci-archive:${image.archive}`, '--repo', join(work, 'a'), '--json'])) as { images: Array<{ layers: typeof layers }> }
  layers = pushed.images[0].layers
  const peer = (JSON.parse(cli(['id', '--repo', join(work, 'a')])) as { addresses: string[] }).addresses[0]
  const configs = [
    { label: '`node bin/ipfs-estargz.js daemon` (node\'s defaults)', asInstalled: false },
    { label: '`ipfs-estargz daemon` (the bin\'s shebang: semi-space 2 MiB, 2 malloc arenas)', asInstalled: true }
  ]
  for (let r = 0; r < runs; r++) {
    for (const [n, cfg] of configs.entries()) {
      process.stderr.write(`run ${r + 1}: node B, ${cfg.label}...\n`)
      samples.push(await measure(cfg.label, join(work, `b${r}-${n}`), peer, cfg.asInstalled))
    }
  }
} finally {
  await a.stop()
  await removeWorkDir(work)
}

const mb = (kb: number): string => (kb / 1024).toFixed(0)
console.log(`\nMemory serving the debootstrap+python3 image (${layers.length} layers, ${(layers.reduce((s, l) => s + l.size, 0) / 1e6).toFixed(1)} MB compressed), every file read once, background fetch ${values['background-fetch'] === true ? 'on' : 'off'}, blocks from a peer over loopback:\n`)
console.log(`median run of ${runs} (by daemon + manager PSS), and the range over the runs\n`)
console.log('| node B run with | files read in | daemon peak RSS / PSS MB | FUSE manager peak RSS / PSS MB | daemon + manager PSS MB (goal ≤ 250) | range over runs |')
console.log('| --- | --- | --- | --- | --- | --- |')
const total = (x: Sample): number => x.daemon.pss + x.manager.pss
for (const label of [...new Set(samples.map(x => x.label))]) {
  const runsOf = samples.filter(x => x.label === label).sort((a, b) => total(a) - total(b))
  const s = runsOf[Math.floor(runsOf.length / 2)]
  console.log(`| ${s.label} | ${s.files} files, ${s.seconds.toFixed(1)} s | ${mb(s.daemon.hwm)} / ${mb(s.daemon.pss)} | ${mb(s.manager.hwm)} / ${mb(s.manager.pss)} | ${mb(total(s))} | ${mb(total(runsOf[0]))}–${mb(total(runsOf[runsOf.length - 1]))} |`)
}

async function measure (label: string, root: string, peer: string, asInstalled: boolean): Promise<Sample> {
  const b = await startDaemon({ root, peers: [peer], config: `[fs]\nbackground_fetch = ${String(values['background-fetch'])}\n`, asInstalled })
  try {
    const client = snapshotsClient(b.address)
    const chain = chainIds(layers.map(l => l.diffID))
    for (const [i, l] of layers.entries()) {
      const err = await client.prepare(`extract-${i}`, i === 0 ? '' : chain[i - 1], {
        'containerd.io/snapshot.ref': chain[i],
        'containerd.io/snapshot/remote/urls': `ipfs://${l.cid}`,
        'containerd.io/snapshot/stargz/toc.digest': l.tocDigest
      }).then(() => undefined, (e: { code?: number, message: string }) => e)
      if (err?.code !== 6) throw new Error(`layer ${i} was not mounted lazily: ${err?.message ?? 'Prepare succeeded'}`)
    }
    const [view] = await client.view('rss-view', chain[chain.length - 1])
    const at = join(root, 'rootfs')
    await mkdir(at)
    const opts = view.options.filter(o => o !== 'rbind')
    execFileSync('mount', [...(view.type === 'bind' ? ['--bind'] : ['-t', view.type]), '-o', opts.join(','), view.source, at])
    let files = 0
    const t0 = performance.now()
    try {
      const out = execFileSync('sh', ['-c', 'find . -type f -print0 | xargs -0 cat | wc -c; find . -type f | wc -l'], { cwd: at, encoding: 'utf8', maxBuffer: 1 << 20 })
      files = Number(out.trim().split('\n')[1])
    } finally {
      execFileSync('umount', [at])
    }
    const seconds = (performance.now() - t0) / 1000
    const fm = await new FuseManagerClient(join(root, 'fuse-manager.sock')).health()
    client.close()
    if (process.env.RSS_HEAPSNAPSHOT === '1') { // with NODE_OPTIONS=--heapsnapshot-signal=SIGUSR2: where the heaps go
      process.kill(b.proc.pid as number, 'SIGUSR2')
      process.kill(fm.pid, 'SIGUSR2')
      await new Promise(resolve => setTimeout(resolve, 30_000))
    }
    return { label, files, seconds, daemon: await memKB(b.proc.pid as number), manager: await memKB(fm.pid) }
  } finally {
    await b.stop()
  }
}
