/**
 * Conversion benchmark: `ipfs-estargz layer build` against the reference converter (esgz-ref,
 * Debian's stargz-snapshotter `estargz` library) on a real layer — the uncompressed tar of the
 * debootstrap base layer of the Debian+python3 fixture image. Runs alternate between the two
 * tools; prints median throughput (uncompressed input MB/s), peak RSS and output size, and
 * verifies each tool's output once (plus the reference reading ours).
 *
 * usage: npx tsx scripts/bench/convert.ts [--runs 3] [--input layer.tar] [--chunk-size 4194304]
 *          [--level 9] [--concurrency N (ours only)] [--cpu-prof]
 * (scripts/bench/convert.sh builds the CLI and the fixture first and passes its arguments on)
 * Needs `npx tsc -p tsconfig.build.json` to have been run (the CLI runs from dist/).
 */
import { spawn } from 'node:child_process'
import { createReadStream, createWriteStream, existsSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { parseArgs } from 'node:util'
import { createGunzip } from 'node:zlib'
import { debianPythonImage } from '../fixtures/debian-image.js'
import { cacheDir, cliPath, esgzRef, repoRoot } from '../fixtures/tools.js'

const MB = 1e6
/** Below this the input says little about sustained throughput; concatenate more layers. */
const MIN_INPUT = 150 * MB
const TIME = '/usr/bin/time'

interface Run { wall: number, user: number, sys: number, rssKB: number, out: Record<string, unknown> }
interface Tool { name: string, cmd: (input: string, out: string) => string[], verify: (out: string, toc: string) => string[] }

function die (msg: string): never {
  process.stderr.write(`bench/convert: ${msg}\n`)
  process.exit(1)
}

/** Runs a command; resolves with stdout, wall seconds and (with /usr/bin/time) rusage. */
async function exec (argv: string[], opts: { timed?: boolean } = {}): Promise<{ stdout: string, wall: number, user: number, sys: number, rssKB: number }> {
  const timeFile = opts.timed === true && existsSync(TIME) ? join(tmp, `time.${process.hrtime.bigint()}`) : undefined
  const full = timeFile != null ? [TIME, '-f', '%e %U %S %M', '-o', timeFile, ...argv] : argv
  const start = process.hrtime.bigint()
  let hwmKB = 0
  const { stdout, code, stderr } = await new Promise<{ stdout: string, stderr: string, code: number | null }>((resolve, reject) => {
    const child = spawn(full[0], full.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.setEncoding('utf8').on('data', (s: string) => { out += s })
    child.stderr.setEncoding('utf8').on('data', (s: string) => { err = (err + s).slice(-4096) })
    // Without /usr/bin/time: poll the child's high-water mark (VmHWM) until it exits.
    const poll = opts.timed === true && timeFile == null
      ? setInterval(() => {
        readFile(`/proc/${child.pid}/status`, 'utf8').then(s => {
          const m = /VmHWM:\s+(\d+)/.exec(s)
          if (m != null) hwmKB = Math.max(hwmKB, Number(m[1]))
        }, () => {})
      }, 20)
      : undefined
    child.on('error', reject)
    child.on('close', code => { if (poll != null) clearInterval(poll); resolve({ stdout: out, stderr: err, code }) })
  })
  const wall = Number(process.hrtime.bigint() - start) / 1e9
  if (code !== 0) die(`${argv.join(' ')} exited ${String(code)}:\n${stderr}`)
  if (timeFile == null) return { stdout, wall, user: NaN, sys: NaN, rssKB: hwmKB }
  const fields = (await readFile(timeFile, 'utf8')).trim().split('\n').pop()?.split(' ').map(Number) ?? []
  await rm(timeFile, { force: true })
  return { stdout, wall, user: fields[1], sys: fields[2], rssKB: fields[3] }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

/** The uncompressed base layer of the fixture image, cached by layer digest. */
async function benchInput (): Promise<string> {
  const img = await debianPythonImage()
  const index = JSON.parse(await readFile(join(img.layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> }
  const blob = (d: string): string => join(img.layout, 'blobs', 'sha256', d.slice('sha256:'.length))
  const manifest = JSON.parse(await readFile(blob(index.manifests[0].digest), 'utf8')) as { layers: Array<{ digest: string }> }
  const dir = join(cacheDir, 'bench')
  await mkdir(dir, { recursive: true })
  const out = join(dir, `debian-base-${manifest.layers[0].digest.slice(7, 19)}.tar`)
  if (existsSync(out)) return out
  // The fixture was rebuilt: inputs cut from older builds are dead weight.
  for (const f of await readdir(dir)) if (/^debian-base-.*\.tar(\.part)?$/.test(f)) await rm(join(dir, f), { force: true })
  const part = `${out}.part`
  await pipeline(createReadStream(blob(manifest.layers[0].digest)), createGunzip(), createWriteStream(part))
  // A small base: append the next layers (tar -A strips the end-of-archive blocks).
  for (const l of manifest.layers.slice(1)) {
    if ((await stat(part)).size >= MIN_INPUT) break
    const t = join(dir, 'layer.part.tar')
    await pipeline(createReadStream(blob(l.digest)), createGunzip(), createWriteStream(t))
    await exec(['tar', '-A', '-f', part, t])
    await rm(t)
  }
  await rename(part, out)
  return out
}

/** Top self-time functions of every .cpuprofile in dir (main thread and any workers). */
async function summariseProfiles (dir: string): Promise<void> {
  interface Node { id: number, callFrame: { functionName: string, url: string, lineNumber: number } }
  for (const f of (await readdir(dir)).filter(f => f.endsWith('.cpuprofile'))) {
    const p = JSON.parse(await readFile(join(dir, f), 'utf8')) as { nodes: Node[], samples: number[], timeDeltas: number[] }
    const byId = new Map(p.nodes.map(n => [n.id, n]))
    const self = new Map<string, number>()
    let total = 0
    p.samples.forEach((id, i) => {
      const n = byId.get(id)
      if (n == null) return
      const cf = n.callFrame
      const key = `${cf.functionName !== '' ? cf.functionName : '(anonymous)'} ${cf.url.replace(/^file:\/\//, '').replace(repoRoot + '/', '')}${cf.url !== '' ? `:${cf.lineNumber + 1}` : ''}`
      const dt = p.timeDeltas[i] ?? 0
      self.set(key, (self.get(key) ?? 0) + dt)
      total += dt
    })
    console.log(`\ncpu profile ${f}: ${(total / 1e6).toFixed(2)} s sampled; top self time:`)
    for (const [k, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 15)) {
      console.log(`  ${(us / 1e6).toFixed(2).padStart(7)} s ${(100 * us / total).toFixed(1).padStart(5)}%  ${k}`)
    }
  }
}

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    input: { type: 'string' },
    'chunk-size': { type: 'string', default: String(4 << 20) },
    level: { type: 'string', default: '9' },
    'cpu-prof': { type: 'boolean', default: false },
    concurrency: { type: 'string' }
  }
})
const runs = Number(args.runs)
if (!Number.isInteger(runs) || runs < 1) die('--runs must be a positive integer')
const flags = ['--chunk-size', args['chunk-size'], '--level', args.level]
/** Passed to our build only (members compressed at once); the reference splits by GOMAXPROCS. */
const oursFlags = args.concurrency != null ? ['--concurrency', args.concurrency] : []
if (!existsSync(join(repoRoot, 'dist', 'cli', 'main.js'))) die('dist/ is missing: run npx tsc -p tsconfig.build.json first')

await mkdir(join(cacheDir, 'bench'), { recursive: true })
const tmp = await mkdtemp(join(cacheDir, 'bench', 'run-'))
try {
  const input = args.input ?? await benchInput()
  const inputSize = (await stat(input)).size
  const ref = esgzRef()
  const tools: Tool[] = [
    { name: 'ipfs-estargz', cmd: (i, o) => [process.execPath, cliPath, 'layer', 'build', i, o, ...flags, ...oursFlags], verify: (o, t) => [process.execPath, cliPath, 'layer', 'verify', o, '--toc-digest', t] },
    { name: 'esgz-ref', cmd: (i, o) => [ref, 'build', i, o, ...flags], verify: (o, t) => [ref, 'verify', o, t] }
  ]
  console.log(`input ${input}: ${(inputSize / MB).toFixed(1)} MB uncompressed; ${runs} runs per tool, alternating; flags ${flags.join(' ')}`)
  console.log(`node ${process.version}, ${(await readFile('/proc/cpuinfo', 'utf8')).split('\n').filter(l => l.startsWith('processor')).length} CPUs, rusage via ${existsSync(TIME) ? TIME : '/proc/<pid>/status VmHWM polling'}`)
  console.log(`load average (1/5/15 min) at the start: ${(await readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ')}`)
  for await (const piece of createReadStream(input)) void piece // warm the page cache: both tools read it warm

  const results = new Map<string, Run[]>(tools.map(t => [t.name, []]))
  for (let r = 0; r < runs; r++) {
    // Swap the order every round so neither tool always runs on a cooler machine.
    for (const t of r % 2 === 0 ? tools : [...tools].reverse()) {
      const out = join(tmp, `${t.name}.blob`)
      await rm(out, { force: true })
      const res = await exec(t.cmd(input, out), { timed: true })
      const run: Run = { wall: res.wall, user: res.user, sys: res.sys, rssKB: res.rssKB, out: JSON.parse(res.stdout) as Record<string, unknown> }
      results.get(t.name)?.push(run)
      console.log(`  run ${r + 1} ${t.name.padEnd(12)} ${run.wall.toFixed(2)} s  ${(inputSize / MB / run.wall).toFixed(1)} MB/s  cpu ${(run.user + run.sys).toFixed(2)} s  rss ${(run.rssKB / 1024).toFixed(0)} MB`)
    }
  }

  // Verify the last output of each tool, and the reference reading ours.
  const verdicts: string[] = []
  for (const t of tools) {
    const out = join(tmp, `${t.name}.blob`)
    const toc = String(results.get(t.name)?.at(-1)?.out.tocDigest)
    await exec(t.verify(out, toc))
    verdicts.push(`${t.name} verify ok`)
  }
  await exec([ref, 'verify', join(tmp, 'ipfs-estargz.blob'), String(results.get('ipfs-estargz')?.at(-1)?.out.tocDigest)])
  verdicts.push('esgz-ref verify of ipfs-estargz output ok')

  const refMedian = median(results.get('esgz-ref')?.map(r => inputSize / MB / r.wall) ?? [])
  console.log('\n| tool | runs | median s | median MB/s | ratio ours/ref | cpu s (median) | peak RSS MB | output MB |')
  console.log('|---|---|---|---|---|---|---|---|')
  for (const t of tools) {
    const rs = results.get(t.name) ?? []
    const mbps = median(rs.map(r => inputSize / MB / r.wall))
    const size = (await stat(join(tmp, `${t.name}.blob`))).size
    console.log(`| ${t.name} | ${rs.length} | ${median(rs.map(r => r.wall)).toFixed(2)} | ${mbps.toFixed(1)} | ${(mbps / refMedian).toFixed(2)} | ${median(rs.map(r => r.user + r.sys)).toFixed(2)} | ${(Math.max(...rs.map(r => r.rssKB)) / 1024).toFixed(0)} | ${(size / MB).toFixed(2)} |`)
  }
  console.log(verdicts.join('; '))
  console.log(`load average (1/5/15 min) at the end: ${(await readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ')} — other jobs on the machine inflate wall times; cpu s is the steadier figure`)

  if (args['cpu-prof']) {
    const dir = join(tmp, 'prof')
    const out = join(tmp, 'prof.blob')
    const [node, ...rest] = tools[0].cmd(input, out)
    const res = await exec([node, '--cpu-prof', '--cpu-prof-dir', dir, ...rest], { timed: true })
    console.log(`\nprofiled run: ${res.wall.toFixed(2)} s (profiling slows it down)`)
    await summariseProfiles(dir)
  }
} finally {
  await rm(tmp, { recursive: true, force: true })
}
