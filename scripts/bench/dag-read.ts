/**
 * Reading a UnixFS file by range from a connected peer: our range reader (src/ipfs/dag-reader.ts,
 * what IpfsSource uses) against @helia/unixfs `cat({ offset, length })`, both over the node's one
 * fetch path (`node.blocks`: local blockstore, block exchange, bitswap).
 *
 * Node A holds a file of random bytes (1 MiB raw leaves); node B, connected over loopback, reads
 * ranges of it it does not have. After each read B's copies of the leaves are deleted, so every
 * sample is a first read; the root stays on B (both readers open the file once, as a mount does).
 * Two cases, the two methods interleaved sample by sample: a 4 KiB read inside one leaf, and a
 * 4 MiB read (an eStargz chunk) across five leaves. Medians and p90 in ms.
 *
 * usage: npx tsx scripts/bench/dag-read.ts [--samples 60] [--size-mib 64]
 */
import '../../src/polyfill.js'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import * as dagPb from '@ipld/dag-pb'
import type { CID } from 'multiformats/cid'
import { silentLogger } from '../../src/logging.js'
import { collectBlock, createNode, importStream, unixfsOf, UnixfsFileReader } from '../../src/ipfs/index.js'

const { values: args } = parseArgs({
  options: {
    samples: { type: 'string', default: '60' },
    'size-mib': { type: 'string', default: '64' }
  }
})
const samples = Number(args.samples)
const MiB = 1 << 20
const size = Number(args['size-mib']) * MiB
const logger = silentLogger()

async function main (): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'ipfs-estargz-bench-dag-read-'))
  const nodeA = await createNode({ repo: join(dir, 'a'), listen: ['/ip4/127.0.0.1/tcp/0'], logger })
  const nodeB = await createNode({ repo: join(dir, 'b'), logger })
  try {
    const data = randomBytes(size)
    const { cid } = await importStream(nodeA.localBlockstore, [data])
    await nodeB.dial(nodeA.multiaddrs()[0])
    for (let i = 0; i < 500 && nodeB.exchange.peers().length === 0; i++) await new Promise(resolve => setTimeout(resolve, 10))
    if (nodeB.exchange.peers().length === 0) throw new Error('node A never announced the block exchange')

    const getBlock = async (c: CID, signal?: AbortSignal): Promise<Uint8Array> => await collectBlock(nodeB.blocks.get(c, { signal }))
    const reader = await UnixfsFileReader.open(cid, getBlock)
    const fs = unixfsOf(getBlock)
    const viaCat = async (offset: number, length: number): Promise<Uint8Array> => {
      const parts: Uint8Array[] = []
      for await (const p of fs.cat(cid, { offset, length })) parts.push(p)
      return Buffer.concat(parts)
    }
    const leaves = dagPb.decode(await collectBlock(nodeA.localBlockstore.get(cid))).Links.map(l => l.Hash)
    const methods: Array<[string, (offset: number, length: number) => Promise<Uint8Array>]> = [
      ['dag-reader', async (o, l) => await reader.read(o, l)],
      ['unixfs.cat', viaCat]
    ]
    const results = new Map<string, number[]>()
    const sample = async (name: string, read: (o: number, l: number) => Promise<Uint8Array>, offset: number, length: number): Promise<number> => {
      const before = nodeB.fetchStats()
      const t0 = process.hrtime.bigint()
      const bytes = await read(offset, length)
      const ms = Number(process.hrtime.bigint() - t0) / 1e6
      if (Buffer.compare(Buffer.from(bytes), data.subarray(offset, offset + length)) !== 0) throw new Error(`${name}: wrong bytes at ${offset}+${length}`)
      const after = nodeB.fetchStats()
      const wanted = Math.floor((offset + length - 1) / MiB) - Math.floor(offset / MiB) + 1
      if (after.exchangeBlocks - before.exchangeBlocks < wanted) throw new Error(`${name}: ${after.exchangeBlocks - before.exchangeBlocks} blocks over the network, ${wanted} expected (cached?)`)
      // Forget the leaves: the next sample is a first read again.
      await nodeB.flush()
      for (let i = Math.floor(offset / MiB); i <= Math.floor((offset + length - 1) / MiB); i++) await nodeB.localBlockstore.delete(leaves[i])
      return ms
    }
    const cases: Array<[string, number]> = [['4 KiB', 4096], ['4 MiB', 4 * MiB]]
    for (let i = -5; i < samples; i++) {
      for (const [label, length] of cases) {
        const leaf = Math.floor(Math.random() * (size / MiB - 5))
        const offset = leaf * MiB + 12_345
        // alternate which method goes first
        const order = i % 2 === 0 ? methods : [...methods].reverse()
        for (const [name, read] of order) {
          const ms = await sample(name, read, offset, length)
          if (i < 0) continue
          const key = `${label} ${name}`
          results.set(key, [...(results.get(key) ?? []), ms])
        }
      }
    }
    const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]
    console.log(`\nfirst reads from a connected peer (loopback, block exchange), ${samples} samples each, node ${process.version}\n`)
    console.log('| read | reader | median | p90 |')
    console.log('|---|---|---|---|')
    for (const [key, xs] of results) {
      const [label, ...rest] = key.split(' ')
      console.log(`| ${label} ${rest[0]} | ${rest.slice(1).join(' ')} | ${pct(xs, 0.5).toFixed(2)} ms | ${pct(xs, 0.9).toFixed(2)} ms |`)
    }
  } finally {
    await nodeB.stop()
    await nodeA.stop()
    await rm(dir, { recursive: true, force: true })
  }
}

await main()
