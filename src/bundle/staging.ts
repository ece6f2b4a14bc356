import { randomBytes } from 'node:crypto'
import { link, mkdir, readdir, readFile, rm, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { NextToLast } from 'blockstore-fs/sharding'
import type { CID } from 'multiformats/cid'
import { NoSpaceError, spaceErrno } from '../ipfs/index.js'
import type { Logger } from '../logging.js'
import { PRIVATE } from '../private-files.js'

/** Staging defaults, in one place. */
export const STAGING_DEFAULTS = {
  /** Folder under the repo that holds imports under way, one folder each. */
  dir: 'import-staging',
  /** Block files written at once while a bundle is read. */
  writeConcurrency: 8
} as const

/** Imports under way in this process (the daemon runs several): their folders are not swept. */
const active = new Set<string>()

function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM' // Node's errno: alive, not ours to signal
  }
}

/** What commit needs of the repo's blockstore. */
export interface CommitTarget {
  /** The blockstore's folder (`<repo>/blocks`). */
  dir: string
  has: (cid: CID) => Promise<boolean>
  put: (cid: CID, bytes: Uint8Array) => Promise<unknown>
  delete: (cid: CID) => Promise<void>
}

/**
 * Blocks of an import under way, in a folder of their own under the repo
 * (`<repo>/import-staging/<pid>-<random>/`), laid out like the blockstore (same sharding), so
 * that committing a block is one rename into `<repo>/blocks`. Nothing reads this folder but the
 * import: no block in it is served or listed before the import has checked the whole bundle.
 * A folder left by an import that was killed is removed by the next import.
 */
export class Staging {
  private readonly sharding = new NextToLast()
  private readonly dirs = new Set<string>()
  private readonly staged = new Set<string>()
  private readonly writes = new Set<Promise<void>>()
  private failed: unknown
  bytes = 0

  private constructor (readonly dir: string, private readonly log: Logger) {}

  static async create (repo: string, log: Logger): Promise<Staging> {
    const parent = join(repo, STAGING_DEFAULTS.dir)
    await mkdir(parent, { recursive: true, mode: PRIVATE.dirMode })
    for (const name of await readdir(parent)) {
      const pid = Number.parseInt(name.split('-')[0], 10)
      const path = join(parent, name)
      if (active.has(path) || (Number.isSafeInteger(pid) && pid > 0 && pid !== process.pid && alive(pid))) continue
      log.info({ path }, 'removing the staging folder of an import that did not finish')
      await rm(path, { recursive: true, force: true })
    }
    const dir = join(parent, `${process.pid}-${randomBytes(6).toString('hex')}`)
    await mkdir(dir, { mode: PRIVATE.dirMode })
    active.add(dir)
    return new Staging(dir, log)
  }

  get count (): number {
    return this.staged.size
  }

  has (cid: CID): boolean {
    return this.staged.has(cid.toString())
  }

  private pathOf (cid: CID): { dir: string, file: string } {
    return this.sharding.encode(cid)
  }

  /**
   * Stages a checked block (a block already staged is skipped). Writes run
   * `writeConcurrency` at a time: this resolves once the block's write has started and the
   * number in flight is below the limit, so memory stays bounded by that many blocks.
   */
  async put (cid: CID, bytes: Uint8Array): Promise<void> {
    if (this.failed != null) throw this.failed
    const key = cid.toString()
    if (this.staged.has(key)) return
    this.staged.add(key)
    this.bytes += bytes.length
    const { dir, file } = this.pathOf(cid)
    const write = (async () => {
      if (!this.dirs.has(dir)) {
        await mkdir(join(this.dir, dir), { recursive: true, mode: PRIVATE.dirMode })
        this.dirs.add(dir)
      }
      await writeFile(join(this.dir, dir, file), bytes, { mode: PRIVATE.fileMode })
    })().catch((err: unknown) => {
      const errno = spaceErrno(err)
      this.failed ??= errno != null ? new NoSpaceError(join(this.dir, dir, file), errno) : err
    })
    this.writes.add(write)
    void write.finally(() => this.writes.delete(write))
    while (this.writes.size >= STAGING_DEFAULTS.writeConcurrency) await Promise.race(this.writes)
    if (this.failed != null) throw this.failed
  }

  /** Waits for every staged block to be written. */
  async flush (): Promise<void> {
    await Promise.all(this.writes)
    if (this.failed != null) throw this.failed
  }

  /** A staged block's bytes (the caller knows it is staged). */
  async get (cid: CID): Promise<Uint8Array> {
    const { dir, file } = this.pathOf(cid)
    return await readFile(join(this.dir, dir, file))
  }

  /**
   * Moves `cids` into the blockstore: a rename each (a block the store already holds is left
   * as it is). Returns the blocks that were added, so that a failure later can take them out again.
   */
  async commit (cids: Iterable<CID>, target: CommitTarget, signal?: AbortSignal): Promise<CID[]> {
    const added: CID[] = []
    const made = new Set<string>()
    try {
      for (const cid of cids) {
        signal?.throwIfAborted()
        if (await target.has(cid)) continue
        const { dir, file } = this.pathOf(cid)
        const from = join(this.dir, dir, file)
        if (!made.has(dir)) {
          await mkdir(join(target.dir, dir), { recursive: true, mode: PRIVATE.dirMode })
          made.add(dir)
        }
        try {
          // link, then unlink: never replaces a file the store wrote meanwhile
          await link(from, join(target.dir, dir, file))
          await unlink(from).catch(() => {})
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code // Node's errno
          if (code === 'EEXIST') continue
          if (code !== 'EXDEV' && code !== 'EPERM') throw err
          // another filesystem (or no hard links): write it through the store
          await target.put(cid, await readFile(from))
        }
        added.push(cid)
      }
    } catch (err) {
      await Staging.uncommit(added, target, this.log)
      const errno = spaceErrno(err)
      throw errno != null ? new NoSpaceError(target.dir, errno) : err
    }
    return added
  }

  /** Takes blocks added by `commit` out of the store again. */
  static async uncommit (added: CID[], target: CommitTarget, log: Logger): Promise<void> {
    for (const cid of added) {
      await target.delete(cid).catch((err: Error) => { log.warn({ cid: cid.toString(), err: err.message }, 'cannot remove a block of a failed import') })
    }
  }

  /** Removes the staging folder. */
  async remove (): Promise<void> {
    await Promise.allSettled(this.writes)
    active.delete(this.dir)
    await rm(this.dir, { recursive: true, force: true })
  }
}
