import { execFileSync, spawnSync } from 'node:child_process'
import { readFileSync, readdirSync, realpathSync } from 'node:fs'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { EstargzReader } from '../../src/estargz/index.js'
import { MediaType } from '../../src/oci/index.js'
import { FileSource } from '../../src/source/file.js'
import { jsonBlob, blob, tagged, writeLayout, type Blob } from '../../scripts/fixtures/oci-image.js'
import { sha256 } from '../../scripts/fixtures/digest.js'
import { makeTar, type FixtureEntry } from '../../scripts/fixtures/tar.js'
import { expect } from 'vitest'
import type { RecordEntry } from '../../src/optimize/index.js'
import { esgzRef } from '../../scripts/fixtures/tools.js'
import { runCli, type RunResult } from '../../scripts/fixtures/run.js'

export async function cli (args: string[], opts: { env?: NodeJS.ProcessEnv, cwd?: string } = {}): Promise<RunResult<string>> {
  return await runCli(args, { env: { ...process.env, ...opts.env }, cwd: opts.cwd, timeoutMs: 600_000 })
}

/** The shared libraries and loader a host binary needs, as `ldd` lists them (absolute paths). */
function libsOf (binary: string): string[] {
  const out = execFileSync('ldd', [binary], { encoding: 'utf8' })
  const libs: string[] = []
  for (const line of out.split('\n')) {
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line)
    if (m != null) libs.push(m[1])
  }
  return libs
}

function dirsOf (paths: string[]): FixtureEntry[] {
  const dirs = new Set<string>()
  for (const p of paths) {
    const parts = p.split('/')
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/') + '/')
  }
  return [...dirs].sort().map(name => ({ name, type: 'dir' as const }))
}

export interface SmallImage {
  layout: string
  manifestDigest: string
  /** Source layer digests, bottom first. */
  layers: string[]
  /** Paths (in the image) of the loader and libc the binaries need. */
  libs: string[]
}

/**
 * A small runnable image made of this machine's dash and sleep: layer 0 the C library and loader
 * (and etc/unused.conf), layer 1 bin/sh, bin/sleep, etc/app.conf ("hello") and etc/other.conf,
 * layer 2 data/untouched.txt and a whiteout of etc/unused.conf, then `extraLayer` if given. Its
 * Cmd reads etc/app.conf.
 */
export async function writeSmallImage (dir: string, opts: { name?: string, extraLayer?: FixtureEntry[] } = {}): Promise<SmallImage> {
  const libs = [...new Set([...libsOf('/bin/sh'), ...libsOf('/bin/sleep')])]
  const rel = libs.map(l => l.slice(1))
  const l0: FixtureEntry[] = [
    ...dirsOf([...rel, 'etc/unused.conf']),
    ...rel.map(p => ({ name: p, data: readFileSync(realpathSync('/' + p)), mode: 0o755 })),
    { name: 'etc/unused.conf', data: 'unused\n' }
  ]
  const l1: FixtureEntry[] = [
    { name: 'bin/', type: 'dir' },
    { name: 'bin/sh', data: readFileSync(realpathSync('/bin/sh')), mode: 0o755 },
    { name: 'bin/sleep', data: readFileSync(realpathSync('/bin/sleep')), mode: 0o755 },
    { name: 'etc/', type: 'dir' },
    { name: 'etc/app.conf', data: 'hello\n' },
    { name: 'etc/other.conf', data: 'other\n' }
  ]
  const l2: FixtureEntry[] = [
    { name: 'data/', type: 'dir' },
    { name: 'data/untouched.txt', data: 'never read\n' },
    { name: 'etc/', type: 'dir' },
    { name: 'etc/.wh.unused.conf', data: '' }
  ]
  const tars = [l0, l1, l2, ...(opts.extraLayer != null ? [opts.extraLayer] : [])].map(l => makeTar(l))
  const layers = tars.map(t => blob(MediaType.OciLayerGzip, gzipSync(t)))
  const config = jsonBlob(MediaType.OciConfig, {
    architecture: process.arch === 'x64' ? 'amd64' : process.arch,
    os: 'linux',
    config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh', '-c', 'read x < /etc/app.conf; echo "got $x"'] },
    rootfs: { type: 'layers', diff_ids: tars.map(t => sha256(t)) },
    history: tars.map((_t, i) => ({ created_by: `layer ${i}` }))
  })
  const manifest = jsonBlob(MediaType.OciManifest, {
    schemaVersion: 2, mediaType: MediaType.OciManifest, config: config.descriptor, layers: layers.map(l => l.descriptor)
  })
  const layout = join(dir, opts.name ?? 'small')
  const blobs: Blob[] = [...layers, config, manifest]
  await writeLayout(layout, blobs, [tagged(manifest.descriptor, 'latest')])
  return { layout, manifestDigest: manifest.descriptor.digest, layers: layers.map(l => l.descriptor.digest), libs: rel }
}

export interface LayoutLayer {
  digest: string
  tocDigest: string
  path: string
}

/** The layers of the (only) image of an OCI layout, with their TOC digest annotations. */
export function layoutLayers (layout: string): LayoutLayer[] {
  const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> }
  const manifest = JSON.parse(readFileSync(join(layout, 'blobs', 'sha256', index.manifests[0].digest.slice(7)), 'utf8')) as { layers: Array<{ digest: string, annotations?: Record<string, string> }> }
  return manifest.layers.map(l => ({ digest: l.digest, tocDigest: l.annotations?.['containerd.io/snapshot/stargz/toc.digest'] ?? '', path: join(layout, 'blobs', 'sha256', l.digest.slice(7)) }))
}

/** The manifest digest of the (only) image of an OCI layout. */
export function layoutManifest (layout: string): string {
  return (JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> }).manifests[0].digest
}

export interface LayerToc {
  /** Every entry name in TOC order (chunk entries left out). */
  names: string[]
  /** Regular files (and hardlinks) before `.prefetch.landmark`, in TOC order; undefined without one. */
  prioritized?: string[]
  /** True when the first entry is `.no.prefetch.landmark`. */
  noPrefetch: boolean
}

/** Reads a layer's TOC with our reader, checked against its TOC digest. */
export async function layerToc (l: LayoutLayer): Promise<LayerToc> {
  const f = await FileSource.open(l.path)
  try {
    const r = await EstargzReader.open(f.read.bind(f), await f.size(), { tocDigest: l.tocDigest })
    const entries = r.toc.entries.filter(e => e.type !== 'chunk')
    const names = entries.map(e => e.name)
    const at = names.indexOf('.prefetch.landmark')
    return {
      names,
      prioritized: at < 0 ? undefined : entries.slice(0, at).filter(e => e.type === 'reg' || e.type === 'hardlink').map(e => e.name),
      noPrefetch: names[0] === '.no.prefetch.landmark'
    }
  } finally {
    await f.close()
  }
}

/** Mounts under `dir` left in this mount namespace. */
export function mountsUnder (dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map(l => l.split(' ')[4]).filter(m => m != null && m.startsWith(dir))
}

/** Pids of processes whose command line is exactly `argv`. */
export function processesRunning (argv: string[]): number[] {
  const want = argv.join('\0') + '\0'
  const out: number[] = []
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue
    try {
      if (readFileSync(`/proc/${p}/cmdline`, 'utf8') === want) out.push(Number(p))
    } catch {}
  }
  return out
}

/** A layer's record paths, each once, in record order. */
export function pathsOf (record: RecordEntry[], layerIndex: number): string[] {
  return [...new Set(record.filter(e => e.layerIndex === layerIndex).map(e => e.path))]
}

/**
 * The layer's prioritized files are the record's, in its order: the regular files before the
 * landmark, seen through the record (a recorded hardlink also moves its target up front, which the
 * record need not name).
 */
export function expectPrioritized (toc: LayerToc, paths: string[]): void {
  expect(toc.prioritized).toBeDefined()
  const recorded = new Set(paths)
  expect(toc.prioritized?.filter(p => recorded.has(p))).toEqual(paths)
  expect(toc.prioritized?.length).toBeLessThanOrEqual(paths.length * 2)
}

/** Every layer of the layout verifies with the reference eStargz library. */
export function verifyLayout (layout: string): void {
  for (const l of layoutLayers(layout)) {
    const v = spawnSync(esgzRef(), ['verify', l.path, l.tocDigest], { encoding: 'utf8' })
    expect(v.status, v.stderr).toBe(0)
  }
}
