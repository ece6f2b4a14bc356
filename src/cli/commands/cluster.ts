import { Command } from 'commander'
import type { LayerStats } from '../../daemon/index.js'
import type { OpenRepo } from '../../ipfs/index.js'
import { createLogger, type LogLevel } from '../../logging.js'
import { commandContext } from '../context.js'
import { DEFAULTS, logLevelOption } from '../options.js'
import { printJson, writeStdout } from '../output.js'
import { openCommandRepo } from '../repo.js'

interface Flags { repo?: string, json?: boolean, logLevel: LogLevel }

/** One connected peer as `peers` prints it. */
export interface PeerInfoOut {
  id: string
  /** The address of each connection to it, and its direction. */
  connections: Array<{ address: string, direction: string }>
  /** Bytes (and blocks) exchanged with it through our block exchange since the node started. */
  bytesReceived: number
  bytesServed: number
  blocksReceived: number
  blocksServed: number
  badBlocks: number
}

function peersOf (repo: OpenRepo): PeerInfoOut[] {
  const { libp2p } = repo.node.helia
  const per = repo.node.exchange.peerStats()
  const byPeer = new Map<string, PeerInfoOut>()
  for (const c of libp2p.getConnections()) {
    const id = c.remotePeer.toString()
    const s = per[id]
    const p = byPeer.get(id) ?? { id, connections: [], bytesReceived: s?.bytesReceived ?? 0, bytesServed: s?.bytesServed ?? 0, blocksReceived: s?.blocksReceived ?? 0, blocksServed: s?.blocksServed ?? 0, badBlocks: s?.badBlocks ?? 0 }
    p.connections.push({ address: c.remoteAddr.toString(), direction: c.direction })
    byPeer.set(id, p)
  }
  return [...byPeer.values()].sort((a, b) => a.id.localeCompare(b.id))
}

/** What `stats` prints: where fetched bytes came from, what was served, discovery. */
function statsOf (repo: OpenRepo): Record<string, unknown> {
  const f = repo.node.fetchStats()
  const ex = repo.node.exchange.stats()
  return {
    peerId: repo.node.peerId.toString(),
    connectedPeers: new Set(repo.node.helia.libp2p.getConnections().map(c => c.remotePeer.toString())).size,
    fetched: {
      local: { blocks: f.localBlocks, bytes: f.localBytes },
      exchange: { blocks: f.exchangeBlocks, bytes: f.exchangeBytes },
      bitswap: { blocks: f.bitswapBlocks, bytes: f.bitswapBytes },
      gateway: { blocks: f.gatewayBlocks, bytes: f.gatewayBytes },
      failures: f.failures
    },
    served: { blocks: ex.servedBlocks, bytes: ex.servedBytes, afterWait: ex.servedAfterWait, dontHaves: ex.servedDontHaves },
    exchange: ex,
    peers: repo.node.exchange.peerStats(),
    discovery: repo.node.discovery.stats()
  }
}

/**
 * The running daemon's mounted layers with their counters; none when the command runs outside a
 * daemon (it has no mounts then).
 */
async function layersOf (): Promise<LayerStats[]> {
  return await (commandContext.getStore()?.layerStats?.(AbortSignal.timeout(DEFAULTS.statsTimeoutMs)) ?? [])
}

/** A mounted layer's lines in `stats`: bytes by who wanted them, and where they came from. */
function layerLines (l: LayerStats): string[] {
  const f = l.fetched
  const lookups = l.cacheHits + l.cacheMisses
  return [
    `  ${l.mountpoint}`,
    `    layer ${l.cid}  ${l.sizeBytes} B compressed${l.complete ? ', all fetched' : ''}`,
    `    fetched ${f.total} B: on demand ${f.onDemand} B, prefetch ${f.prefetch} B, background ${f.background} B`,
    `    from chunk cache ${l.from.chunkCache} B, local blockstore ${l.from.localBlockstore} B, network ${l.from.network} B`,
    `    served ${l.bytesServed} B; cache hits ${l.cacheHits}/${lookups}${l.verificationFailures > 0 ? `; verification failures ${l.verificationFailures}` : ''}`
  ]
}

const withRepo = async (flags: Flags, fn: (repo: OpenRepo) => Promise<void>): Promise<void> => {
  const repo = await openCommandRepo(flags.repo, createLogger(flags.logLevel))
  try {
    await fn(repo)
  } finally {
    await repo.close()
  }
}

export function peersCommand (): Command {
  return new Command('peers')
    .description('list the connected peers, their addresses and the bytes exchanged with each through the block exchange (the running daemon\'s, when one owns the repo)')
    .option('--repo <dir>', 'repo (or daemon root)')
    .option('--json', 'one JSON document: a list of peers')
    .addOption(logLevelOption())
    .action(async (flags: Flags) => {
      await withRepo(flags, async (repo) => {
        const peers = peersOf(repo)
        if (flags.json === true) { await printJson(peers); return }
        const lines = peers.map(p => `${p.id}  ${p.connections.map(c => `${c.address} (${c.direction})`).join(', ')}  received ${p.bytesReceived} B  served ${p.bytesServed} B${p.badBlocks > 0 ? `  bad blocks ${p.badBlocks}` : ''}`)
        await writeStdout(lines.length > 0 ? lines.join('\n') + '\n' : 'no peers connected\n')
      })
    })
}

export function statsCommand (): Command {
  return new Command('stats')
    .description('bytes fetched per source (local, block exchange, bitswap, gateways) and per peer, bytes served to peers, discovery counters, and per mounted layer the bytes fetched on demand, by prefetch and in the background and where they came from (the running daemon\'s, when one owns the repo)')
    .option('--repo <dir>', 'repo (or daemon root)')
    .option('--json', 'one JSON document')
    .addOption(logLevelOption())
    .action(async (flags: Flags) => {
      await withRepo(flags, async (repo) => {
        const layers = await layersOf()
        const s: Record<string, unknown> = { ...statsOf(repo), layers }
        if (flags.json === true) { await printJson(s); return }
        const f = s.fetched as Record<string, { blocks: number, bytes: number }>
        const sv = s.served as { blocks: number, bytes: number, afterWait: number }
        const lines = [
          `peer id          ${String(s.peerId)}`,
          `connected peers  ${String(s.connectedPeers)}`,
          ...(['local', 'exchange', 'bitswap', 'gateway'] as const).map(k => `fetched ${k.padEnd(9)}${String(f[k].bytes).padStart(14)} B in ${f[k].blocks} blocks`),
          `served to peers  ${String(sv.bytes).padStart(14)} B in ${sv.blocks} blocks (${sv.afterWait} answered once our own fetch arrived)`,
          ...Object.entries(s.peers as Record<string, { bytesReceived: number, bytesServed: number }>).map(([id, p]) => `  ${id}  received ${p.bytesReceived} B  served ${p.bytesServed} B`),
          `layers mounted   ${layers.length}`,
          ...layers.flatMap(layerLines)
        ]
        await writeStdout(lines.join('\n') + '\n')
      })
    })
}
