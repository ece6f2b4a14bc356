import { readFile } from 'node:fs/promises'
import { Command } from 'commander'
import { buildEstargzFile, EstargzReader, NotARegularFileError, type TarInput } from '../../estargz/index.js'
import { FileSource } from '../../source/file.js'
import { UsageError, parseNonNegativeInt } from '../errors.js'
import { DEFAULTS, chunkSizeOption, levelOption } from '../options.js'
import { printJson, writeStdout } from '../output.js'

/** Reads a prioritized-files list: one path per line; blank lines and `#` comments ignored. */
async function readPathList (file: string): Promise<string[]> {
  const text = await readFile(file, 'utf8')
  return text.split('\n').map(l => l.trim()).filter(l => l !== '' && !l.startsWith('#'))
}

async function withReader<T> (blob: string, tocDigest: string | undefined, fn: (r: EstargzReader) => Promise<T>): Promise<T> {
  const src = await FileSource.open(blob)
  try {
    const reader = await EstargzReader.open(src.read.bind(src), await src.size(), { tocDigest })
    return await fn(reader)
  } finally {
    await src.close()
  }
}

function buildCommand (): Command {
  return new Command('build')
    .description('convert a tar layer (plain, gzip or zstd; "-" for stdin) into an eStargz blob')
    .argument('<in>', 'input tar, tar.gz or tar.zst ("-" reads stdin)')
    .argument('<out>', 'output blob (written atomically)')
    .addOption(chunkSizeOption('bytes of file data per gzip member'))
    .addOption(levelOption('gzip compression level 0-9'))
    .option('--prioritized-files <file>', 'file listing paths to place first (one per line), followed by .prefetch.landmark')
    .option('--allow-missing-prioritized', 'skip prioritized paths that are not in the layer instead of failing')
    .option('--concurrency <n>', 'gzip members compressed in parallel (output bytes do not depend on it)', parseNonNegativeInt('--concurrency'))
    .addHelpText('after', '\nPrints {"tocDigest","diffID","size","uncompressedSize"} as one JSON line.\n')
    .action(async (input: string, out: string, opts: { chunkSize: number, level: number, prioritizedFiles?: string, allowMissingPrioritized?: boolean, concurrency?: number }) => {
      if (opts.chunkSize === 0) throw new UsageError('--chunk-size must be positive')
      const prioritizedFiles = opts.prioritizedFiles != null ? await readPathList(opts.prioritizedFiles) : undefined
      const source: TarInput = input === '-' ? process.stdin : input
      const ac = new AbortController()
      const onSignal = (): void => ac.abort()
      process.once('SIGINT', onSignal)
      process.once('SIGTERM', onSignal)
      try {
        const r = await buildEstargzFile(source, out, {
          chunkSize: opts.chunkSize,
          compressionLevel: opts.level,
          prioritizedFiles,
          allowPrioritizedNotFound: opts.allowMissingPrioritized,
          concurrency: opts.concurrency === 0 ? undefined : opts.concurrency,
          signal: ac.signal
        })
        for (const p of r.missedPrioritizedFiles) process.stderr.write(`ipfs-estargz: prioritized file not in layer: ${p}\n`)
        await printJson({ tocDigest: r.tocDigest, diffID: r.diffID, size: r.size, uncompressedSize: r.uncompressedSize })
      } finally {
        process.off('SIGINT', onSignal)
        process.off('SIGTERM', onSignal)
      }
    })
}

function verifyCommand (): Command {
  return new Command('verify')
    .description('check the TOC digest and every chunk of every file of an eStargz blob')
    .argument('<blob>', 'eStargz blob')
    .requiredOption('--toc-digest <digest>', 'the trusted TOC digest (layer annotation containerd.io/snapshot/stargz/toc.digest)')
    .addHelpText('after', '\nExits 0 only if everything verifies; prints a JSON report.\n')
    .action(async (blob: string, opts: { tocDigest: string }) => {
      if (!/^sha256:[0-9a-f]{64}$/.test(opts.tocDigest)) throw new UsageError(`--toc-digest must be sha256:<64 hex digits>, got ${JSON.stringify(opts.tocDigest)}`)
      const report = await withReader(blob, opts.tocDigest, async r => await r.verify(opts.tocDigest))
      await printJson({ ok: true, ...report })
    })
}

function lsCommand (): Command {
  return new Command('ls')
    .description('list the TOC entries of an eStargz blob, one JSON object per line, in TOC order')
    .argument('<blob>', 'eStargz blob')
    .option('--toc-digest <digest>', 'fail unless the TOC has this digest')
    .action(async (blob: string, opts: { tocDigest?: string }) => {
      await withReader(blob, opts.tocDigest, async (r) => {
        for (const e of r.toc.entries) await writeStdout(JSON.stringify(e) + '\n')
      })
    })
}

function catCommand (): Command {
  return new Command('cat')
    .description('write a file of an eStargz blob to stdout, every chunk verified against the TOC')
    .argument('<blob>', 'eStargz blob')
    .argument('<path>', 'path inside the layer (symlinks inside the layer are followed)')
    .option('--offset <n>', 'start at this byte of the file', parseNonNegativeInt('--offset'), 0)
    .option('--length <n>', 'at most this many bytes', parseNonNegativeInt('--length'))
    .option('--toc-digest <digest>', 'fail unless the TOC has this digest')
    .action(async (blob: string, path: string, opts: { offset: number, length?: number, tocDigest?: string }) => {
      await withReader(blob, opts.tocDigest, async (r) => {
        const node = r.resolve(path)
        if (node.type !== 'reg') throw new NotARegularFileError(path, node.type === 'dir' ? 'directory' : node.type)
        const end = Math.min(node.size, opts.length != null ? opts.offset + opts.length : node.size)
        // Stream in steps so a large file never sits in memory whole.
        for (let pos = opts.offset; pos < end; pos += DEFAULTS.catStepBytes) {
          await writeStdout(await r.readFile(node, pos, Math.min(DEFAULTS.catStepBytes, end - pos)))
        }
      })
    })
}

export function layerCommand (): Command {
  return new Command('layer')
    .description('build, verify, list and read eStargz layer blobs (local files)')
    .addCommand(buildCommand())
    .addCommand(verifyCommand())
    .addCommand(lsCommand())
    .addCommand(catCommand())
}
