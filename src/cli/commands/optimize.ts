import { open, rename, rm, stat } from 'node:fs/promises'
import { Command, Option } from 'commander'
import { createLogger } from '../../logging.js'
import { DEFAULTS, formatRecord, optimizeImage, parsePrefetchList, parseRecord, type OptimizeResult, type Profile, type SandboxRuntime } from '../../optimize/index.js'
import { commandContext } from '../context.js'
import { UsageError } from '../errors.js'
import { chunkSizeOption, collect, levelOption, logLevelOption } from '../options.js'
import { convertAndPublish, type PublishFlags } from '../publish.js'

interface OptimizeFlags extends PublishFlags {
  entrypoint?: string
  args?: string
  env: string[]
  cwd?: string
  user?: string
  period?: number
  sandbox?: SandboxRuntime
  recordOut?: string
  recordIn?: string
  prefetchList?: string
}


function parsePeriod (value: string): number {
  if (!/^\d+(\.\d+)?$/.test(value) || Number(value) <= 0) throw new UsageError(`--period must be a positive number of seconds, got ${JSON.stringify(value)}`)
  const n = Number(value)
  if (n > DEFAULTS.maxPeriodSec) throw new UsageError(`--period is at most ${DEFAULTS.maxPeriodSec} seconds`)
  return n
}

function jsonArray (flag: string, value: string): string[] {
  let v: unknown
  try {
    v = JSON.parse(value)
  } catch {
    throw new UsageError(`${flag} must be a JSON array of strings, e.g. '["python3","-c","print(1)"]'`)
  }
  if (!Array.isArray(v) || !v.every(s => typeof s === 'string')) throw new UsageError(`${flag} must be a JSON array of strings`)
  return v
}

/** A file given to us, read whole but never past `DEFAULTS.maxInputBytes`. */
async function readBounded (flag: string, file: string): Promise<string> {
  const st = await stat(file)
  if (!st.isFile()) throw new UsageError(`${flag} ${file}: not a regular file`)
  if (st.size > DEFAULTS.maxInputBytes) throw new UsageError(`${flag} ${file}: larger than ${DEFAULTS.maxInputBytes} bytes`)
  const fh = await open(file, 'r')
  try {
    const buf = Buffer.alloc(DEFAULTS.maxInputBytes + 1)
    let n = 0
    for (;;) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, n)
      if (bytesRead === 0) break
      n += bytesRead
      if (n > DEFAULTS.maxInputBytes) throw new UsageError(`${flag} ${file}: larger than ${DEFAULTS.maxInputBytes} bytes`)
    }
    return buf.subarray(0, n).toString('utf8')
  } finally {
    await fh.close()
  }
}

/** Writes a file through a temporary name, so a reader never sees half of it. */
async function writeAtomically (file: string, text: string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`
  try {
    const fh = await open(tmp, 'wx', 0o644)
    try {
      await fh.writeFile(text)
    } finally {
      await fh.close()
    }
    await rename(tmp, file)
  } catch (err) {
    await rm(tmp, { force: true })
    throw err
  }
}

/** The profile the flags ask for; usage errors for flags that do not go together. */
async function profileOf (flags: OptimizeFlags): Promise<Profile> {
  const runFlags: string[] = Object.entries({ '--entrypoint': flags.entrypoint, '--args': flags.args, '--cwd': flags.cwd, '--user': flags.user, '--period': flags.period })
    .filter(([, v]) => v != null).map(([f]) => f)
  if (flags.env.length > 0) runFlags.push('--env')
  if (flags.recordIn != null && flags.prefetchList != null) throw new UsageError('give --record-in or --prefetch-list, not both')
  const replay = flags.recordIn != null ? '--record-in' : flags.prefetchList != null ? '--prefetch-list' : undefined
  if (replay != null && runFlags.length > 0) throw new UsageError(`${runFlags.join(', ')}: nothing is run with ${replay}`)
  if (flags.recordIn != null) return { kind: 'record', entries: parseRecord(await readBounded('--record-in', flags.recordIn), flags.recordIn) }
  if (flags.prefetchList != null) return { kind: 'list', patterns: parsePrefetchList(await readBounded('--prefetch-list', flags.prefetchList), flags.prefetchList), name: flags.prefetchList }
  for (const kv of flags.env) if (/^=|\0/.test(kv)) throw new UsageError(`--env must be KEY=VALUE (or KEY to unset), got ${JSON.stringify(kv)}`)
  if (flags.cwd != null && !flags.cwd.startsWith('/')) throw new UsageError(`--cwd must be an absolute path in the image, got ${JSON.stringify(flags.cwd)}`)
  return {
    kind: 'run',
    periodMs: Math.round((flags.period ?? DEFAULTS.periodSec) * 1000),
    workload: {
      entrypoint: flags.entrypoint != null ? jsonArray('--entrypoint', flags.entrypoint) : undefined,
      args: flags.args != null ? jsonArray('--args', flags.args) : undefined,
      env: flags.env,
      cwd: flags.cwd,
      user: flags.user
    }
  }
}

/** "N files (layer 0: a, layer 1: b)": the prioritized files per layer index, each layer once. */
function summary (r: OptimizeResult): string {
  const byLayer = new Map<number, number>()
  const seen = new Set<string>()
  for (const img of r.conversion.images) {
    img.layers.forEach((l, i) => {
      const n = r.prioritized.get(l.source.digest)?.length ?? 0
      if (n === 0 || seen.has(l.source.digest)) return
      seen.add(l.source.digest)
      byLayer.set(i, (byLayer.get(i) ?? 0) + n)
    })
  }
  const total = [...byLayer.values()].reduce((a, b) => a + b, 0)
  const parts = [...byLayer].sort((a, b) => a[0] - b[0]).map(([i, n]) => `layer ${i}: ${n}`)
  return `${total} files${parts.length > 0 ? ` (${parts.join(', ')})` : ''}`
}

export function optimizeCommand (): Command {
  return new Command('optimize')
    .description('convert an image to workload-optimized eStargz: run its workload once in a sandbox (no network), record the files it reads first, put them at the front of their layers followed by .prefetch.landmark, publish like push; prints the root CID')
    .argument('<source>', 'oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE or docker://HOST/REPO[:TAG]')
    .option('--repo <dir>', 'repo of the embedded node (default $IPFS_ESTARGZ_PATH or ~/.ipfs-estargz)')
    .option('--platform <os/arch>', 'only this platform of a multi-platform image (default: all; the workload runs on this machine\'s)')
    .option('--output <oci:DIR>', 'also write the optimized image as an OCI layout')
    .option('--to <docker://HOST/REPO:TAG>', 'also push the optimized image to a registry')
    .option('--no-ipfs', 'do not publish to IPFS (with --output or --to)')
    .option('--json', 'print every CID, as push does, with each layer\'s prioritized files and landmark, and the run')
    .option('--kubo-compatible', 'fixed 256 KiB leaves, 174 links per node: the CIDs `ipfs add --cid-version=1` gives')
    .addOption(chunkSizeOption('eStargz chunk size'))
    .addOption(levelOption('gzip level 0-9'))
    .option('--plain-http', 'talk HTTP, not HTTPS, to registries (loopback registries)')
    .option('--creds <user:password>', 'registry credentials (default: ~/.docker/config.json)')
    .option('--entrypoint <json>', 'workload entrypoint instead of the image\'s, a JSON array: \'["python3"]\'')
    .option('--args <json>', 'workload arguments instead of the image\'s Cmd, a JSON array: \'["-c","import json"]\'')
    .option('--env <KEY=VALUE>', 'set (or with KEY alone, unset) a variable of the workload\'s environment (repeatable)', collect, [])
    .option('--cwd <dir>', 'working directory of the workload instead of the image\'s')
    .option('--user <user[:group]>', 'user of the workload instead of the image\'s (names from the image\'s /etc/passwd)')
    .option('--period <seconds>', `how long the workload runs before it is stopped (default ${DEFAULTS.periodSec})`, parsePeriod)
    .addOption(new Option('--sandbox <runtime>', 'how the workload is isolated: runc (as a container; runc\'s own reads of /etc/passwd and /etc/group enter the record), namespaces (unshare and a chroot), auto (namespaces for now)').choices(['auto', 'runc', 'namespaces']).default('auto'))
    .option('--record-out <file>', 'write the accesses the layers were rebuilt from, as JSON lines {"path","manifestDigest","layerIndex"}')
    .option('--record-in <file>', 'rebuild from a record (ours or `ctr-remote image optimize --record-out`\'s) instead of running the workload')
    .option('--prefetch-list <file>', 'rebuild from a list of paths and globs (* ? [] **; # comments) instead of running the workload')
    .addOption(logLevelOption())
    .addHelpText('after', `
The workload runs as root (or --user) over an overlay of the image's layers mounted lazily through
FUSE, with a tmpfs for its writes: it has no network and what it writes is thrown away. With runc
(--sandbox runc, or auto when runc is installed) it runs as a container would: its own pid, mount,
network, ipc, uts and cgroup namespaces, containerd's default capabilities, masked /proc paths, no
new privileges. Without, in private mount, network and pid namespaces and a chroot. It is stopped after --period seconds or when it
exits. Needs root and /dev/fuse; --record-in and --prefetch-list run nothing. The sandbox is not
stronger than a container: run only images you would run in one.
`)
    .action(async (sourceRef: string, flags: OptimizeFlags) => {
      const logger = createLogger(flags.logLevel)
      if (flags.chunkSize === 0) throw new UsageError('--chunk-size must be positive')
      const profile = await profileOf(flags)
      const ctx = commandContext.getStore()
      const stderr = (s: string): void => { if (ctx != null) ctx.stderr(s); else process.stderr.write(s) }
      await convertAndPublish<OptimizeResult>(sourceRef, flags, logger, {
        tmpPrefix: 'ipfs-estargz-optimize-',
        convert: async (c) => {
          const r = await optimizeImage({ logger, output: stderr }, c.source, c.publishers, {
            profile, sandbox: flags.sandbox, logLevel: flags.logLevel, platform: c.platform, chunkSize: flags.chunkSize, compressionLevel: flags.level, name: sourceRef, tmpDir: c.tmpDir, signal: c.signal, logger, onProgress: c.onProgress
          })
          return { conversion: r.conversion, extra: r }
        },
        afterConvert: async (r) => {
          if (r.run != null) {
            const how = r.run.stopped ? `was stopped after ${(r.run.durationMs / 1000).toFixed(1)} s` : `exited after ${(r.run.durationMs / 1000).toFixed(1)} s with ${r.run.exitCode != null ? `code ${r.run.exitCode}` : `signal ${String(r.run.signal)}`}`
            stderr(`ipfs-estargz: the workload ${how}; it read ${summary(r)}\n`)
            if ((r.droppedAccesses ?? 0) > 0) stderr(`ipfs-estargz: ${r.droppedAccesses ?? 0} more accesses were not recorded (at most ${DEFAULTS.maxEntries})\n`)
          } else {
            stderr(`ipfs-estargz: prioritized ${summary(r)}\n`)
          }
          for (const u of r.unmatched ?? []) stderr(`ipfs-estargz: ${flags.prefetchList ?? 'prefetch list'} line ${u.line}: ${JSON.stringify(u.pattern)} matches no file\n`)
          if (flags.recordOut != null) await writeAtomically(flags.recordOut, formatRecord(r.record))
        },
        json: {
          top: (r) => ({
            run: r.run != null ? { exitCode: r.run.exitCode, signal: r.run.signal, stopped: r.run.stopped, seconds: Math.round(r.run.durationMs) / 1000, sandbox: r.run.runtime } : undefined,
            recorded: r.record.length
          }),
          layer: (l, r) => ({ landmark: l.landmark, prioritizedFiles: r.prioritized.get(l.source.digest)?.length ?? 0 })
        }
      })
    })
}
