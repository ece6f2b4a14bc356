import { readdir, readFile } from 'node:fs/promises'
import { join, posix, relative, sep } from 'node:path'
import ts from 'typescript'
import { describe, expect, it } from 'vitest'

/**
 * The layers of src/, bottom to top. A module is a folder under src/, or one file at the top of
 * src/ (a leaf). A module imports only from its own rank or below, never in a cycle, and from
 * another module only what that module's index.ts exports. A new module must be given a rank here.
 */
const RANKS: Record<string, { rank: number, why: string }> = {
  'errors.ts': { rank: 0, why: 'the base of every error class' },
  'logging.ts': { rank: 0, why: 'the logger every component is given' },
  'polyfill.ts': { rank: 0, why: 'what Node 20 lacks, loaded first by every entry point' },
  'private-files.ts': { rank: 0, why: 'the modes and umask of what we write under a repo' },
  'unix-http.ts': { rank: 0, why: 'the plumbing of our JSON APIs over unix sockets (routes, bodies, one error shape, the client) and their health probe' },
  'limit.ts': { rank: 0, why: 'a concurrency limit for async tasks (layer conversions, a stream\'s remote leaf fetches)' },
  'signals.ts': { rank: 0, why: 'abort signals for a deadline or several sources that keep their sources (AbortSignal.any can lose an AbortSignal.timeout to a GC)' },
  'open-lru.ts': { rank: 0, why: 'an LRU of open resources (chunk files, the blob API\'s sources) that closes what it evicts' },
  estargz: { rank: 1, why: 'the format alone, usable and tested without the rest (errors.ts only)' },
  oci: { rank: 2, why: 'the image model, image readers and sinks; reads layer tars with estargz' },
  wire: { rank: 2, why: 'containerd\'s protos, message shapes and labels, one copy for its client and our snapshotter; a GC label names its blob by media type (oci)' },
  ipfs: { rank: 3, why: 'the Helia node, member-aligned import (estargz), the layout directory and digest index' },
  bundle: { rank: 4, why: 'images as CAR bundles: export from and checked import into the repo (ipfs, oci)' },
  source: { rank: 4, why: 'byte-range reads of a blob: a file, an IPFS file (ipfs)' },
  fs: { rank: 5, why: 'the lazy layer filesystem over a RangeSource (estargz, source), its FUSE mounts and the layer mounter' },
  fusemgr: { rank: 6, why: 'the FUSE manager process that holds fs\'s mounts, its client and the mounter over that client' },
  'prefetch-record': { rank: 6, why: 'learned prefetch: first-read records of layers, shared over libp2p, replayed through the fetch path (ipfs, source)' },
  convert: { rank: 6, why: 'conversion to eStargz and the publishers the result goes to (estargz, oci, ipfs, source)' },
  optimize: { rank: 7, why: 'workload-optimized images: runs the workload over fs\'s mounts, rebuilds the layers with convert' },
  containerd: { rank: 7, why: 'containerd\'s client and the pull into it (wire, oci)' },
  snapshotter: { rank: 7, why: 'the Snapshots service; lazy layers through the mounter it is given (wire, fs)' },
  mirror: { rank: 7, why: 'mirror mode\'s HTTP listener: the registry read API and a trustless gateway over the repo (ipfs, oci)' },
  daemon: { rank: 8, why: 'puts the node, the snapshotter, the FUSE manager and the control API into one process' },
  cli: { rank: 9, why: 'the commands: parse, call the modules, print; nothing imports it' }
}

/**
 * Imports of another module's inner file, each allowed for a reason: where start-up time or
 * memory matters, the importer takes only the file it needs instead of an index that loads far
 * more. ipfs's index loads Helia and libp2p (about a second and 80 MB), and so do the indexes
 * that export something built on the node (source's IpfsSource, daemon's Daemon); oci's loads
 * the registry client. The test "... loads no Helia" below holds these paths light.
 */
const ALLOWED: Array<{ from: string, to: string, why: string }> = [
  // Every command starts in cli/main.ts, `--help` too; it loads the command's code only when the
  // command runs here rather than in a daemon.
  { from: 'cli/main.ts', to: 'daemon/control-client.ts', why: 'forwarding a command to the daemon needs only the control client' },
  { from: 'cli/commands/fuse-manager.ts', to: 'daemon/control-client.ts', why: '`fuse-manager --stop` asks whether a daemon answers; the FUSE manager must not load the daemon' },
  { from: 'cli/main.ts', to: 'daemon/errors.ts', why: 'the error of an unreachable daemon' },
  { from: 'cli/main.ts', to: 'ipfs/repo.ts', why: 'the environment variable that names the repo' },
  { from: 'cli/commands/layer.ts', to: 'source/file.ts', why: '`layer` works on local files and starts in ~0.1 s: no node, no IPFS code' },
  { from: 'cli/commands/swarm.ts', to: 'ipfs/swarm-key.ts', why: 'generating a swarm key loads no Helia' },
  // The FUSE manager process lives as long as the lazy mounts: it loads no Helia.
  { from: 'cli/commands/fuse-manager.ts', to: 'daemon/config.ts', why: 'the FUSE manager takes its defaults from the daemon\'s configuration' },
  { from: 'cli/commands/config.ts', to: 'daemon/config.ts', why: '`config show` prints the configuration: no node, no daemon' },
  { from: 'daemon/config.ts', to: 'prefetch-record/defaults.ts', why: 'learned prefetch\'s defaults (the configuration is loaded in the FUSE manager): not its libp2p protocol' },
  { from: 'daemon/config.ts', to: 'mirror/defaults.ts', why: 'the mirror\'s defaults (the configuration is loaded in the FUSE manager): not its server' },
  { from: 'daemon/config.ts', to: 'source/readahead.ts', why: 'the read-ahead default (the configuration is loaded in the FUSE manager)' },
  { from: 'fusemgr/manager.ts', to: 'source/readahead.ts', why: 'the FUSE manager\'s mounts read through a read-ahead window' },
  { from: 'optimize/sandbox-run.ts', to: 'source/file.ts', why: 'the sandbox\'s child process serves local layer files through FUSE and loads no IPFS code' },
  // Every process that reads a label key (the FUSE manager too) loads wire/labels.ts.
  { from: 'wire/labels.ts', to: 'oci/media-types.ts', why: 'a GC label names its blob by media type: the predicates, not oci\'s registry client' }
]

/** What must stay light, and what it must not load (our files, and packages by name prefix). */
const LIGHT: Array<{ root: string, why: string }> = [
  { root: 'cli/main.ts', why: 'every command starts here' },
  { root: 'cli/commands/layer.ts', why: '`layer build --help` starts in ~0.1 s' },
  { root: 'cli/commands/fuse-manager.ts', why: 'the FUSE manager process holds the lazy mounts for as long as they live' }
]
const HEAVY = { files: ['ipfs/node.ts'], packages: ['helia', '@helia/', 'libp2p', '@libp2p/', '@grpc/proto-loader'] }

/** estargz stands alone: of ours it may import only the shared error base. */
const ESTARGZ_MAY_IMPORT = new Set(['errors.ts'])

interface Import { from: string, to: string }

/** The module a path under src/ belongs to: its top folder, or itself at the top. */
function moduleOf (path: string): string {
  const slash = path.indexOf('/')
  return slash < 0 ? path : path.slice(0, slash)
}

function isIndex (path: string): boolean {
  return path === `${moduleOf(path)}/index.ts`
}

/** Every import of ours in these files (static, re-exports, type-only and dynamic), as paths under src/. */
function importsOf (files: Record<string, string>): { imports: Import[], problems: string[] } {
  const imports: Import[] = []
  const problems: string[] = []
  for (const [from, text] of Object.entries(files)) {
    for (const { fileName } of ts.preProcessFile(text, true, true).importedFiles) {
      if (!fileName.startsWith('.')) continue // a package or node: builtin
      const to = posix.join(posix.dirname(from), fileName).replace(/\.js$/, '.ts')
      if (to.startsWith('../') || !(to in files)) {
        problems.push(`src/${from} imports '${fileName}', which is no file of src/`)
        continue
      }
      imports.push({ from, to })
    }
  }
  return { imports, problems }
}

/**
 * What importing `root` loads: its static imports, transitively (type-only ones are erased;
 * dynamic ones load later, when called). Our files as paths under src/, packages as `pkg:<name>`.
 */
function loadedBy (files: Record<string, string>, root: string): Set<string> {
  const seen = new Set<string>()
  const visit = (path: string): void => {
    if (seen.has(path)) return
    seen.add(path)
    const sf = ts.createSourceFile(path, files[path] ?? '', ts.ScriptTarget.Latest)
    for (const st of sf.statements) {
      let spec: ts.Expression | undefined
      if (ts.isImportDeclaration(st) && st.importClause?.isTypeOnly !== true) spec = st.moduleSpecifier
      if (ts.isExportDeclaration(st) && !st.isTypeOnly) spec = st.moduleSpecifier
      if (spec == null || !ts.isStringLiteral(spec)) continue
      const name = spec.text
      if (name.startsWith('.')) visit(posix.join(posix.dirname(path), name).replace(/\.js$/, '.ts'))
      else seen.add(`pkg:${name}`)
    }
  }
  visit(root)
  return seen
}

/** Strongly connected components of more than one module (Tarjan), each as a list of modules. */
function cycles (edges: Map<string, Set<string>>): string[][] {
  const index = new Map<string, number>()
  const low = new Map<string, number>()
  const stack: string[] = []
  const onStack = new Set<string>()
  const out: string[][] = []
  let next = 0
  const visit = (v: string): void => {
    index.set(v, next); low.set(v, next); next++
    stack.push(v); onStack.add(v)
    for (const w of edges.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w)
        low.set(v, Math.min(low.get(v) as number, low.get(w) as number))
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v) as number, index.get(w) as number))
      }
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = []
      let w: string
      do { w = stack.pop() as string; onStack.delete(w); scc.push(w) } while (w !== v)
      if (scc.length > 1) out.push(scc.sort())
    }
  }
  for (const v of [...edges.keys()].sort()) if (!index.has(v)) visit(v)
  return out
}

/** The shortest cycle within a strongly connected set of modules, as a path that ends where it starts. */
function shortestCycle (scc: string[], edges: Map<string, Set<string>>): string[] {
  let best: string[] = []
  for (const start of scc) {
    const prev = new Map<string, string>()
    const queue = [start]
    let found = false
    while (queue.length > 0 && !found) {
      const v = queue.shift() as string
      for (const w of [...(edges.get(v) ?? [])].sort()) {
        if (!scc.includes(w)) continue
        if (w === start) { prev.set(start, v); found = true; break }
        if (!prev.has(w)) { prev.set(w, v); queue.push(w) }
      }
    }
    const path = [start]
    for (let v = prev.get(start) as string; v !== start; v = prev.get(v) as string) path.unshift(v)
    path.unshift(start)
    if (best.length === 0 || path.length < best.length) best = path
  }
  return best
}

/**
 * Checks the layering of a source tree (path under src/ → text) and returns what breaks it,
 * one line each; empty when all holds.
 */
export function checkLayering (files: Record<string, string>, ranks = RANKS, allowed = ALLOWED): string[] {
  const { imports, problems } = importsOf(files)
  for (const path of Object.keys(files)) {
    if (ranks[moduleOf(path)] == null) problems.push(`src/${path}: its module ${moduleOf(path)} has no rank in the layering table`)
  }
  const modules = new Set(Object.keys(files).map(moduleOf))
  for (const name of Object.keys(ranks)) {
    if (!modules.has(name)) problems.push(`the layering table ranks ${name}, which is no module of src/: remove it`)
  }
  const used = new Set<number>()
  const edges = new Map<string, Set<string>>()
  const evidence = new Map<string, string>()
  for (const { from, to } of imports) {
    const [a, b] = [moduleOf(from), moduleOf(to)]
    if (a === b) continue
    const [ra, rb] = [ranks[a]?.rank, ranks[b]?.rank]
    if (ra != null && rb != null && rb > ra) problems.push(`upward import: src/${from} imports src/${to} (${a} is rank ${ra}, ${b} is rank ${rb})`)
    if (a === 'estargz' && !ESTARGZ_MAY_IMPORT.has(to)) problems.push(`estargz stands alone: src/${from} imports src/${to}`)
    if (b !== to && !isIndex(to)) {
      const i = allowed.findIndex(e => e.from === from && e.to === to)
      if (i < 0) problems.push(`past the index: src/${from} imports src/${to}, not src/${b}/index.ts`)
      else used.add(i)
    }
    if (!edges.has(a)) edges.set(a, new Set())
    edges.get(a)?.add(b)
    if (!evidence.has(`${a}>${b}`)) evidence.set(`${a}>${b}`, `src/${from} → src/${to}`)
  }
  for (const scc of cycles(edges)) {
    const path = shortestCycle(scc, edges)
    const steps = path.slice(1).map((m, i) => `${m} (${evidence.get(`${path[i]}>${m}`) ?? ''})`)
    problems.push(`cycle between modules ${scc.join(', ')}: ${path[0]} → ${steps.join(' → ')}`)
  }
  allowed.forEach((e, i) => { if (!used.has(i)) problems.push(`allow-list entry src/${e.from} → src/${e.to} matches no import: remove it`) })
  return problems
}

async function readSources (root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || !entry.name.endsWith('.ts')) continue
    const full = join(entry.parentPath, entry.name)
    out[relative(root, full).split(sep).join('/')] = await readFile(full, 'utf8')
  }
  return out
}

describe('layering of src/', () => {
  it('imports point down, never in a cycle, only through index.ts (or the allow-list), and estargz stands alone', async () => {
    const files = await readSources(join(import.meta.dirname, '..', 'src'))
    // the scan sees what it must: a static import, a re-export and a lazy command import
    const seen = importsOf(files).imports.map(i => `${i.from} > ${i.to}`)
    expect(seen).toContain('cli/main.ts > cli/program.ts')
    expect(seen).toContain('cli/program.ts > cli/commands/layer.ts')
    expect(seen).toContain('estargz/index.ts > estargz/errors.ts')
    expect(checkLayering(files)).toEqual([])
  })

  it('what must start fast or stay small loads no Helia, libp2p or protobufjs', async () => {
    const files = await readSources(join(import.meta.dirname, '..', 'src'))
    for (const { root, why } of LIGHT) {
      const loaded = [...loadedBy(files, root)]
      expect(loaded.length, root).toBeGreaterThan(3)
      const heavy = loaded.filter(l => HEAVY.files.includes(l) || HEAVY.packages.some(p => l.startsWith(`pkg:${p}`)))
      expect(heavy, `src/${root} must stay light (${why}), yet loads`).toEqual([])
    }
    // and the check sees the weight where it is
    expect([...loadedBy(files, 'cli/commands/push.ts')]).toContain('ipfs/node.ts')
  })

  it('every module has a rank and a reason', () => {
    for (const [name, { rank, why }] of Object.entries(RANKS)) {
      expect(Number.isInteger(rank), name).toBe(true)
      expect(why.length, name).toBeGreaterThan(10)
    }
    for (const e of ALLOWED) expect(e.why.length, `${e.from} → ${e.to}`).toBeGreaterThan(5)
  })
})

describe('checkLayering', () => {
  const ranks = { 'errors.ts': { rank: 0, why: '' }, estargz: { rank: 1, why: '' }, low: { rank: 2, why: '' }, peer: { rank: 2, why: '' }, high: { rank: 3, why: '' }, top: { rank: 4, why: '' } }
  const base = {
    'errors.ts': 'export class E extends Error {}',
    'estargz/index.ts': "export * from './a.js'",
    'estargz/a.ts': "import { E } from '../errors.js'",
    'low/index.ts': "export * from './inner.js'",
    'low/inner.ts': "import { E } from '../errors.js'",
    'peer/index.ts': "import { x } from '../low/index.js'",
    'high/index.ts': "import { x } from '../low/index.js'\nconst y = async () => await import('../peer/index.js')",
    'top/index.ts': ''
  }
  const check = (extra: Record<string, string>, allowed: Array<{ from: string, to: string, why: string }> = []): string[] => checkLayering({ ...base, ...extra }, ranks, allowed)

  it('passes a tree that keeps the rules', () => {
    expect(check({})).toEqual([])
  })

  it('fails an upward import, a dynamic one too', () => {
    expect(check({ 'low/up.ts': "import { t } from '../top/index.js'" })).toEqual(['upward import: src/low/up.ts imports src/top/index.ts (low is rank 2, top is rank 4)'])
    expect(check({ 'low/up.ts': "const t = async () => await import('../top/index.js')" })).toEqual(['upward import: src/low/up.ts imports src/top/index.ts (low is rank 2, top is rank 4)'])
  })

  it('fails a cycle between modules of one rank', () => {
    expect(check({ 'low/back.ts': "import type { P } from '../peer/index.js'" })).toEqual([
      'cycle between modules low, peer: low → peer (src/low/back.ts → src/peer/index.ts) → low (src/peer/index.ts → src/low/index.ts)'
    ])
  })

  it('fails an import past the index unless allowed, and an allow-list entry nothing uses', () => {
    const deep = { 'high/deep.ts': "import { x } from '../low/inner.js'" }
    expect(check(deep)).toEqual(['past the index: src/high/deep.ts imports src/low/inner.ts, not src/low/index.ts'])
    expect(check(deep, [{ from: 'high/deep.ts', to: 'low/inner.ts', why: 'test' }])).toEqual([])
    expect(check({}, [{ from: 'high/deep.ts', to: 'low/inner.ts', why: 'test' }])).toEqual(['allow-list entry src/high/deep.ts → src/low/inner.ts matches no import: remove it'])
  })

  it('fails estargz importing anything of ours but errors.ts', () => {
    expect(check({ 'estargz/b.ts': "import { x } from '../low/index.js'" })).toContain('estargz stands alone: src/estargz/b.ts imports src/low/index.ts')
  })

  it('fails a module without a rank, a rank without a module, and an import of a file that does not exist', () => {
    expect(check({ 'new/index.ts': '' })).toEqual(['src/new/index.ts: its module new has no rank in the layering table'])
    expect(checkLayering(base, { ...ranks, gone: { rank: 2, why: '' } }, [])).toEqual(['the layering table ranks gone, which is no module of src/: remove it'])
    expect(check({ 'low/x.ts': "import { y } from './missing.js'" })).toEqual(["src/low/x.ts imports './missing.js', which is no file of src/"])
  })

  it('ignores comments, strings and packages', () => {
    expect(check({ 'low/c.ts': "// import x from '../high/index.js'\nconst s = \"import('../high/index.js')\"\nimport pino from 'pino'\nimport { a } from 'node:fs'" })).toEqual([])
  })
})
