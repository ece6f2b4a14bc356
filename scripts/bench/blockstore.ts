/**
 * Blockstore candidates side by side: replays a set of blocks into each store with 8 writers (as
 * the importer's `blockWriteConcurrency`) and prints wall time, CPU time and RSS. The blocks: the
 * files of a blockstore-fs folder (e.g. `blocks/` of a repo the Debian image was pushed into with
 * `[ipfs] blockstore = "fs"` or an older version), or `small`: 100,000 synthetic blocks of
 * 120 B–6.5 KB. Figures in docs/ipfs.md#the-blockstore.
 *
 * usage: npx tsx scripts/bench/blockstore.ts <blocks-folder|small> <fs|fs-many|level|level-batch|lmdb|lmdb-nosync|lmdb-wb|lmdbns-wb|pack|packstore|lmdbstore> <out-dir>
 */
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { open as fopen, mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { createHash } from 'node:crypto'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { FsBlockstore } from 'blockstore-fs'
import { NextToLast } from 'blockstore-fs/sharding'
import { LevelBlockstore } from 'blockstore-level'
import { open as lmdbOpen } from 'lmdb'

const src = process.argv[2]; const which = process.argv[3]; const out = process.argv[4]
const blocks: Array<{ cid: CID, bytes: Uint8Array }> = []
const walk = (d: string): void => { for (const n of readdirSync(d)) { const p = join(d, n); if (statSync(p).isDirectory()) walk(p); else if (n.endsWith('.data')) { const b = readFileSync(p); blocks.push({ cid: CID.createV1(0x55, Digest.create(0x12, createHash('sha256').update(b).digest())), bytes: b }) } } }
if (src === 'small') { const { randomBytes } = await import('node:crypto'); for (let k = 0; k < 100000; k++) { const b = randomBytes(k % 2 === 0 ? 120 + (k % 400) : 500 + (k * 7919) % 6000); blocks.push({ cid: CID.createV1(0x55, Digest.create(0x12, createHash('sha256').update(b).digest())), bytes: b }) } } else walk(src)
// shuffle-ish deterministic order
await rm(out, { recursive: true, force: true }); await mkdir(out, { recursive: true })
let put: (cid: CID, b: Uint8Array) => Promise<unknown>
let fin: () => Promise<void> = async () => {}
if (which === 'fs') { const s = new FsBlockstore(out, { shardingStrategy: new NextToLast() }); await s.open(); put = async (c, b) => await s.put(c, b) }
else if (which === 'level') { const s = new LevelBlockstore(out); await s.open(); put = async (c, b) => await s.put(c, b); fin = async () => { await s.close() } }
else if (which.endsWith('-wb')) {
  const db = lmdbOpen({ path: join(out, 'db'), encoding: 'binary', keyEncoding: 'binary', noSync: which === 'lmdbns-wb' })
  let pend = 0; const waiters: Array<() => void> = []
  put = async (c, b) => { while (pend > (32 << 20)) await new Promise<void>(r => waiters.push(r)); pend += b.length; void db.put(c.multihash.bytes, b).then(() => { pend -= b.length; waiters.splice(0).forEach(f => f()) }) }
  fin = async () => { await db.flushed; await db.close() }
}
else if (which === 'packstore' || which === 'lmdbstore') { const { PackBlockstore } = await import('../../src/ipfs/pack-blockstore.js'); const { LmdbBlockstore } = await import('../../src/ipfs/lmdb-blockstore.js'); const s = which === 'packstore' ? new PackBlockstore(out) : new LmdbBlockstore(join(out, 'b.mdb')); await s.open(); put = async (c, b) => await s.put(c, b); fin = async () => { await s.flush(); await s.close() } }
else if (which === 'fs-many') { const s = new FsBlockstore(out, { shardingStrategy: new NextToLast(), putManyConcurrency: 50 }); await s.open(); const q: Array<{ cid: CID, bytes: Uint8Array }> = []; put = async (c, b) => { q.push({ cid: c, bytes: b }) }; fin = async () => { for await (const _ of s.putMany(q as never)) {} } }
else if (which === 'level-batch') { const s = new LevelBlockstore(out); await s.open(); const db = (s as any).db; let batch = db.batch(); let n = 0; let last: Promise<void> = Promise.resolve()
  put = async (c, b) => { batch.put('/' + Buffer.from(c.multihash.bytes).toString('hex'), b); n += b.length; if (n > (4 << 20)) { await last; last = batch.write(); batch = db.batch(); n = 0 } }
  fin = async () => { await last; await batch.write(); await s.close() } }
else if (which.startsWith('lmdb')) { const db = lmdbOpen({ path: join(out, 'db'), encoding: 'binary', keyEncoding: 'binary', noSync: which === 'lmdb-nosync' }); put = async (c, b) => await db.put(c.multihash.bytes, b); fin = async () => { await db.flushed; await db.close() } }
else if (which === 'pack') {
  const fh = await fopen(join(out, 'pack'), 'a'); let off = 0
  const db = lmdbOpen({ path: join(out, 'idx'), encoding: 'binary', keyEncoding: 'binary' })
  put = async (c, b) => { const at = off; off += b.length; await fh.write(b, 0, b.length, at); const v = Buffer.alloc(16); v.writeUInt32LE(0, 0); v.writeBigUInt64LE(BigInt(at), 4); v.writeUInt32LE(b.length, 12); await db.put(c.multihash.bytes, v) }
  fin = async () => { await fh.sync(); await fh.close(); await db.flushed; await db.close() }
} else throw new Error(which)
const t0 = process.hrtime.bigint(); const c0 = process.cpuUsage()
let i = 0
const worker = async (): Promise<void> => { while (i < blocks.length) { const b = blocks[i++]; await put(b.cid, b.bytes) } }
await Promise.all(Array.from({ length: 8 }, worker))
await fin()
const secs = Number(process.hrtime.bigint() - t0) / 1e9; const cpu = process.cpuUsage(c0)
console.log(`${which}\t${blocks.length} blocks\t${secs.toFixed(2)} s\tcpu user ${(cpu.user / 1e6).toFixed(2)} sys ${(cpu.system / 1e6).toFixed(2)}\trss ${(process.memoryUsage().rss / 1e6).toFixed(0)} MB`)
