import { access, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from '../logging.js'
import { InvalidOptionError } from './errors.js'
import { LmdbBlockstore, type LmdbBlockstoreOptions } from './lmdb-blockstore.js'
import { DEFAULTS as PACK_DEFAULTS, PackBlockstore, type PackBlockstoreOptions } from './pack-blockstore.js'
import { RepoBlockstore } from './stores.js'

/** Where a repo's blocks live, and which store a new repo gets. */
export const DEFAULTS = {
  /** The store of a repo that holds no blocks yet (docs/ipfs.md#the-blockstore). */
  kind: 'pack' as BlockstoreKind,
  /** The folder of the pack and LMDB stores inside the repo. */
  dir: 'blockstore',
  /** The LMDB store's data file inside `dir`. */
  lmdbFile: 'blocks.mdb',
  /** blockstore-fs's folder inside the repo (one file per block; the only store of earlier versions). */
  fsDir: 'blocks'
} as const

export const BLOCKSTORE_KINDS = ['pack', 'lmdb', 'fs'] as const
export type BlockstoreKind = typeof BLOCKSTORE_KINDS[number]

/** The repo's local blockstore: either kind has `putFetched`, `pendingWrites` and `flush`. */
export type LocalBlockstore = PackBlockstore | LmdbBlockstore | RepoBlockstore

const exists = async (path: string): Promise<boolean> => await access(path).then(() => true, () => false)
const hasEntries = async (dir: string): Promise<boolean> => (await readdir(dir).catch(() => [])).length > 0

/**
 * The repo's blockstore (not opened yet). A repo keeps the store it has: one with a pack index
 * or an LMDB file stays so whatever `kind` says; one with only a blockstore-fs folder stays fs
 * when `kind` is 'fs', and otherwise gets the new store for new blocks with the folder read
 * behind it (`legacy`): nothing is copied at open, every block stays readable and deletable.
 */
export async function createLocalBlockstore (repo: string, options: { kind?: BlockstoreKind, pack?: Omit<PackBlockstoreOptions, 'legacy'>, lmdb?: Omit<LmdbBlockstoreOptions, 'legacy'> } = {}, log?: Logger): Promise<LocalBlockstore> {
  const kind = options.kind ?? DEFAULTS.kind
  if (!(BLOCKSTORE_KINDS as readonly string[]).includes(kind)) throw new InvalidOptionError(`blockstore: "${String(kind)}" is not one of ${BLOCKSTORE_KINDS.join(', ')}`)
  const dir = join(repo, DEFAULTS.dir)
  const lmdbPath = join(dir, DEFAULTS.lmdbFile)
  const fsPath = join(repo, DEFAULTS.fsDir)
  const legacy = async (): Promise<RepoBlockstore | undefined> => await hasEntries(fsPath) ? new RepoBlockstore(fsPath, log) : undefined
  const have = await exists(join(dir, PACK_DEFAULTS.indexFile)) ? 'pack' : await exists(lmdbPath) ? 'lmdb' : await hasEntries(fsPath) ? 'fs' : undefined
  const use = have === 'pack' || have === 'lmdb' ? have : have === 'fs' && kind === 'fs' ? 'fs' : kind
  if (use === 'fs') return new RepoBlockstore(fsPath, log)
  const old = await legacy()
  if (have === 'fs') log?.info({ repo, legacy: fsPath }, `new blocks go to the ${use} blockstore; blocks of the blockstore-fs folder stay readable`)
  return use === 'pack'
    ? new PackBlockstore(dir, { ...options.pack, legacy: old }, log)
    : new LmdbBlockstore(lmdbPath, { ...options.lmdb, legacy: old }, log)
}
