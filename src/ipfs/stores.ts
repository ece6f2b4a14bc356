import { rm } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { FsBlockstore } from 'blockstore-fs'
import { NextToLast } from 'blockstore-fs/sharding'
import { FsDatastore } from 'datastore-fs'
import type { Key } from 'interface-datastore'
import type { CID } from 'multiformats/cid'
import type { Logger } from '../logging.js'
import { NoSpaceError, spaceErrno } from './errors.js'

/**
 * blockstore-fs and datastore-fs write a value to `.<name>.tmp` next to its file, then rename it.
 * A failed write (a full disk) leaves that temp file behind, and the store says only
 * "PutFailedError: Error: ENOSPC ...". These stores remove the temp file and turn a space error
 * into a NoSpaceError that names the file.
 */
async function failedPut (err: unknown, file: string): Promise<never> {
  await rm(join(dirname(file), `.${basename(file)}.tmp`), { force: true })
  const errno = spaceErrno(err)
  throw errno != null ? new NoSpaceError(file, errno) : err
}

export class RepoBlockstore extends FsBlockstore {
  private readonly sharding: NextToLast

  constructor (location: string) {
    const sharding = new NextToLast()
    super(location, { shardingStrategy: sharding })
    this.sharding = sharding
  }

  override async put (key: CID, val: Parameters<FsBlockstore['put']>[1], options?: Parameters<FsBlockstore['put']>[2]): Promise<CID> {
    try {
      return await super.put(key, val, options)
    } catch (err) {
      const { dir, file } = this.sharding.encode(key)
      return await failedPut(err, join(this.path, dir, file))
    }
  }
}

/**
 * Datastore keys whose records are a cache (libp2p's peer store: peers' addresses, protocols and
 * our own record, written again at every start). On a full disk a write there is dropped, so a
 * node still starts and a full repo can still be listed and read.
 */
const CACHE_PREFIXES = ['/peers/']

export class RepoDatastore extends FsDatastore {
  private warned = false

  constructor (location: string, private readonly log: Logger) {
    super(location)
  }

  override async put (key: Key, val: Uint8Array, options?: Parameters<FsDatastore['put']>[2]): Promise<Key> {
    try {
      return await super.put(key, val, options)
    } catch (err) {
      const k = key.toString()
      try {
        return await failedPut(err, this._encode(key).file)
      } catch (e) {
        if (!(e instanceof NoSpaceError) || !CACHE_PREFIXES.some(p => k.startsWith(p))) throw e
        if (!this.warned) this.log.warn({ key: k, err: e.message }, 'disk full: peer records are not saved')
        this.warned = true
        return key
      }
    }
  }
}
