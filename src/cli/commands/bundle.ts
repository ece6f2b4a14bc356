import { randomBytes } from 'node:crypto'
import { open, rename, rm, stat } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
import { Command, Option } from 'commander'
import { exportBundle, importBundle, type BundleProgress } from '../../bundle/index.js'
import { createLogger, type LogLevel } from '../../logging.js'
import { PRIVATE } from '../../private-files.js'
import { cancelOn, commandContext } from '../context.js'
import { UsageError } from '../errors.js'
import { DEFAULTS, collect, logLevelOption } from '../options.js'
import { printJson, writeStderr, writeStdout } from '../output.js'
import { openCommandRepo } from '../repo.js'

/** Bundle file reads, in steps of this many bytes. */
const READ_STEP = 1 << 20

function mb (n: number): string {
  return (n / 1e6).toFixed(1)
}

/**
 * One progress line on stderr, redrawn: blocks, MB and MB/s of the phase under way. On by
 * default on a terminal (never inside the daemon, whose stderr is not the client's terminal
 * unless `--progress` says so); the last state is printed once at the end either way.
 */
class ProgressLine {
  private last?: BundleProgress
  private timer?: NodeJS.Timeout
  private readonly start = Date.now()
  private drawn = false

  constructor (private readonly verb: string, private readonly live: boolean) {}

  readonly onProgress = (p: BundleProgress): void => {
    this.last = p
    if (this.live) this.timer ??= setInterval(() => this.draw(), DEFAULTS.progressIntervalMs)
  }

  private line (): string {
    const p = this.last
    if (p == null) return ''
    const secs = Math.max(0.001, (Date.now() - this.start) / 1000)
    const phase = p.phase === 'read' ? 'reading and checking blocks' : p.phase === 'check' ? 'checking the images' : p.phase === 'commit' ? 'storing' : 'writing'
    return `${this.verb}: ${phase}: ${p.blocks} blocks, ${mb(p.bytes)} MB, ${mb(p.bytes / secs)} MB/s`
  }

  private draw (): void {
    if (this.last == null) return
    writeStderr(`\r\x1b[2K${this.line()}`)
    this.drawn = true
  }

  stop (): void {
    if (this.timer != null) clearInterval(this.timer)
    this.timer = undefined
    if (this.drawn) writeStderr('\r\x1b[2K')
  }
}

/** Progress is live on a terminal in a plain CLI process, or when asked. */
function liveProgress (flag: boolean | undefined): boolean {
  if (flag != null) return flag
  return commandContext.getStore() == null && process.stderr.isTTY === true
}

interface ExportFlags { output: string, repo?: string, fetch?: boolean, peer: string[], json?: boolean, progress?: boolean, logLevel: LogLevel }

export function exportCommand (): Command {
  return new Command('export')
    .description('write images and every block they need (layout directory, descriptor, index, manifests, configs, layers) as one CAR file, to carry across an air gap; `import` reads it back')
    .argument('<image...>', 'root CID (ipfs://CID, /ipfs/CID or CID), descriptor CID, or a name `image ls` lists')
    .requiredOption('-o, --output <file>', 'the CAR file to write (`-` for stdout); written whole or not at all')
    .option('--repo <dir>', 'repo of the node (the daemon\'s root while it runs)')
    .option('--fetch', 'fetch blocks missing from the repo from the node\'s peers and gateways, instead of refusing (ERR_EXPORT_INCOMPLETE)')
    .option('--peer <multiaddr>', 'peer to fetch missing blocks from, with --fetch (repeatable)', collect, [])
    .option('--json', 'print what was written as JSON on stdout (not with -o -)')
    .addOption(new Option('--progress', 'redraw a progress line on stderr (default: on a terminal)'))
    .addOption(new Option('--no-progress', 'no progress line'))
    .addOption(logLevelOption())
    .action(async (refs: string[], flags: ExportFlags) => {
      const toStdout = flags.output === '-'
      if (toStdout && flags.json === true) throw new UsageError('--json prints on stdout, where -o - writes the bundle')
      if (flags.peer.length > 0 && flags.fetch !== true) throw new UsageError('--peer is for --fetch')
      const target = toStdout ? undefined : resolve(flags.output)
      if (target != null && (await stat(target).catch(() => undefined))?.isDirectory() === true) throw new UsageError(`-o ${flags.output} is a directory: name the file to write`)
      const logger = createLogger(flags.logLevel)
      // --fetch stores what it fetches: then a missing repo is created
      const repo = await openCommandRepo(flags.repo, logger, { peers: flags.peer, create: flags.fetch === true })
      const ac = new AbortController()
      const stopListening = cancelOn(ac)
      const progress = new ProgressLine('export', liveProgress(flags.progress))
      // written next to the target, renamed over it at the end: never a partial bundle under its name
      const tmp = target != null ? join(dirname(target), `.${basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`) : undefined
      let ok = false
      try {
        if (commandContext.getStore() != null) for (const p of flags.peer) await repo.node.dial(p, ac.signal)
        const fh = tmp != null ? await open(tmp, 'wx', PRIVATE.fileMode) : undefined
        let result
        try {
          result = await exportBundle({ blocks: repo.node.blocks, has: async (cid) => await repo.node.localBlockstore.has(cid), index: repo.index, logger }, {
            refs,
            fetch: flags.fetch === true,
            signal: ac.signal,
            onProgress: progress.onProgress,
            sink: fh != null ? async (chunk) => { await fh.write(chunk) } : writeStdout
          })
          if (fh != null) await fh.sync()
        } finally {
          await fh?.close()
        }
        progress.stop()
        if (tmp != null && target != null) await rename(tmp, target)
        ok = true
        const summary = { output: target ?? '-', ...result }
        if (flags.json === true) await printJson(summary)
        else writeStderr(`exported ${result.images.length} image${result.images.length === 1 ? '' : 's'} (${result.blocks} blocks, ${mb(result.carBytes)} MB) to ${target ?? 'stdout'}\n`)
      } finally {
        progress.stop()
        stopListening()
        if (!ok && tmp != null) await rm(tmp, { force: true })
        await repo.close()
      }
    })
}

interface ImportFlags { repo?: string, name?: string, json?: boolean, progress?: boolean, logLevel: LogLevel }

export function importCommand (): Command {
  return new Command('import')
    .description('read a CAR bundle written by `export` into the repo: every block is checked against its CID, each image for completeness and every blob against its digest, before anything is stored; then the images are pinned and listed')
    .argument('<file>', 'the CAR file (`-` for stdin)')
    .option('--repo <dir>', 'repo of the node (the daemon\'s root while it runs)')
    .option('--name <name>', 'name to list the image under (one image only; default ipfs://ROOT)')
    .option('--json', 'print the result as JSON')
    .addOption(new Option('--progress', 'redraw a progress line on stderr (default: on a terminal)'))
    .addOption(new Option('--no-progress', 'no progress line'))
    .addOption(logLevelOption())
    .action(async (file: string, flags: ImportFlags) => {
      if (file === '-' && commandContext.getStore() != null) {
        throw new UsageError('a daemon holds the repo and cannot read this command\'s stdin: give the bundle as a file')
      }
      const logger = createLogger(flags.logLevel)
      // opened before the repo: a wrong path fails without touching it
      const input = file === '-' ? process.stdin : await openInput(resolve(file))
      const repo = await openCommandRepo(flags.repo, logger, { create: true })
      const ac = new AbortController()
      const stopListening = cancelOn(ac)
      const progress = new ProgressLine('import', liveProgress(flags.progress))
      try {
        const store = repo.node.localBlockstore
        const result = await importBundle({
          repo: repo.path,
          store: {
            has: async (cid) => await store.has(cid),
            put: async (cid, bytes) => await store.put(cid, bytes),
            delete: async (cid) => { await store.delete(cid) }
          },
          index: repo.index,
          logger
        }, input, { name: flags.name, signal: ac.signal, onProgress: progress.onProgress })
        progress.stop()
        if (flags.json === true) await printJson(result)
        else for (const img of result.images) await writeStdout(`${img.root}\n`)
        if (result.ignored > 0) writeStderr(`import: ${result.ignored} blocks of the bundle belong to no image: checked and dropped\n`)
      } finally {
        progress.stop()
        stopListening()
        if (input !== process.stdin) (input as NodeJS.ReadableStream & { destroy: () => void }).destroy()
        await repo.close()
      }
    })
}

/** A bundle file's stream, opened at once so that a missing file fails here. */
async function openInput (path: string): Promise<NodeJS.ReadableStream & AsyncIterable<Uint8Array>> {
  const fh = await open(path, 'r')
  return fh.createReadStream({ highWaterMark: READ_STEP })
}
