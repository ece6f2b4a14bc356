import { join } from 'node:path'
import { Command } from 'commander'
import { ChunkCache } from '../../fs/index.js'
import { FuseManagerClient, FuseManagerUnavailableError } from '../../fusemgr/index.js'
import type { ChunkGcReport } from '../../ipfs/index.js'
import { createLogger, type Logger, type LogLevel } from '../../logging.js'
import { cancelOn } from '../context.js'
import { logLevelOption } from '../options.js'
import { printJson } from '../output.js'
import { openCommandRepo } from '../repo.js'

interface Flags { repo?: string, logLevel: LogLevel, dryRun?: boolean }

/**
 * The chunk cache of a repo no daemon owns: a FUSE manager still serving from it collects its
 * own (keeping its mounted layers' chunks); without one nothing is mounted and every entry goes.
 */
async function collectIdleChunks (repoPath: string, logger: Logger, dryRun: boolean): Promise<ChunkGcReport> {
  try {
    return await new FuseManagerClient(join(repoPath, 'fuse-manager.sock')).gc({ dryRun })
  } catch (err) {
    if (!(err instanceof FuseManagerUnavailableError)) throw err
  }
  const cache = new ChunkCache({ logger }, { dir: join(repoPath, 'cache', 'chunks') })
  await cache.start()
  try {
    const swept = await cache.sweep(() => false, { dryRun })
    return { ...swept, keptEntries: 0, keptBytes: 0 }
  } finally {
    await cache.stop()
  }
}

export function gcCommand (): Command {
  return new Command('gc')
    .description('remove the blocks no pin, mounted layer or command under way needs, and the cached chunks no mounted layer needs; prints what was freed')
    .option('--repo <dir>', 'repo of the node (the daemon\'s root while it runs)')
    .option('--dry-run', 'count what would be removed, remove nothing')
    .addOption(logLevelOption())
    .action(async (flags: Flags) => {
      const logger = createLogger(flags.logLevel)
      const repo = await openCommandRepo(flags.repo, logger)
      const ac = new AbortController()
      const stopListening = cancelOn(ac)
      try {
        const dryRun = flags.dryRun === true
        const blocks = await repo.collector.run({ dryRun, signal: ac.signal })
        const chunks = await repo.collector.runChunks({ dryRun, signal: ac.signal }) ?? await collectIdleChunks(repo.path, logger, dryRun)
        await printJson({
          dryRun,
          freedBytes: blocks.freedBytes + chunks.bytes,
          blocks: { freed: blocks.freedBlocks, freedBytes: blocks.freedBytes, kept: blocks.liveBlocks, keptBytes: blocks.liveBytes, before: blocks.blocks, beforeBytes: blocks.bytes, roots: blocks.roots },
          chunks: { freed: chunks.entries, freedBytes: chunks.bytes, kept: chunks.keptEntries, keptBytes: chunks.keptBytes },
          durationMs: blocks.durationMs
        })
      } finally {
        stopListening()
        await repo.close()
      }
    })
}
