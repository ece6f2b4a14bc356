import { randomBytes } from 'node:crypto'
import { mkdir, open, readdir, rm, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import type { CID } from 'multiformats/cid'
import { NoSpaceError, spaceErrno } from '../ipfs/index.js'
import type { Logger } from '../logging.js'
import { PRIVATE } from '../private-files.js'

/** Staging defaults, in one place. */
export const STAGING_DEFAULTS = {
  /** Folder under the repo that holds imports under way, one folder each. */
  dir: 'import-staging',
  /** Staged blocks are appended to the spool file in writes of about this many bytes. */
  spoolWriteBytes: 4 << 20,
  /** Blocks written into the blockstore at once at commit (each is a few thread-pool operations). */
  commitConcurrency: 8
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

/** What commit needs of the repo's blockstore (its own atomic writes: temp file, then rename). */
export interface CommitTarget {
  has: (cid: CID) => Promise<boolean>
  put: (cid: CID, bytes: Uint8Array) => Promise<unknown>
  delete: (cid: CID) => Promise<void>
}

function noSpace (err: unknown, path: string): unknown {
  const errno = spaceErrno(err)
  return errno != null ? new NoSpaceError(path, errno) : err
}

/**
 * Blocks of an import under way, appended to one spool file in a folder of their own under the
 * repo (`<repo>/import-staging/<pid>-<random>/`), with their offsets in memory. Nothing reads
 * the spool but the import: no block in it is served or listed before the import has checked
 * the whole bundle. One file, not one per block: staging and re-reading a block costs no
 * open/close. A folder left by an import that was killed is removed by the next import.
 */
export class Staging {
  private readonly index = new Map<string, { cid: CID, offset: number, length: number }>()
  private pending: Uint8Array[] = []
  private pendingBytes = 0
  /** Bytes of the spool written or pending. */
  private size = 0
  bytes = 0

  private constructor (readonly dir: string, private readonly spool: FileHandle, private readonly spoolPath: string) {}

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
    const spoolPath = join(dir, 'blocks.spool')
    try {
      return new Staging(dir, await open(spoolPath, 'wx+', PRIVATE.fileMode), spoolPath)
    } catch (err) {
      active.delete(dir)
      await rm(dir, { recursive: true, force: true })
      throw noSpace(err, spoolPath)
    }
  }

  get count (): number {
    return this.index.size
  }

  has (cid: CID): boolean {
    return this.index.has(cid.toString())
  }

  /** Stages a checked block (a block already staged is skipped). */
  async put (cid: CID, bytes: Uint8Array): Promise<void> {
    const key = cid.toString()
    if (this.index.has(key)) return
    this.index.set(key, { cid, offset: this.size, length: bytes.length })
    this.size += bytes.length
    this.bytes += bytes.length
    // a view of the reader's input chunk, held until it is written (at most spoolWriteBytes)
    this.pending.push(bytes)
    this.pendingBytes += bytes.length
    if (this.pendingBytes >= STAGING_DEFAULTS.spoolWriteBytes) await this.flush()
  }

  /** Writes what is pending to the spool. */
  async flush (): Promise<void> {
    if (this.pendingBytes === 0) return
    const chunk = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending, this.pendingBytes)
    const at = this.size - this.pendingBytes
    this.pending = []
    this.pendingBytes = 0
    try {
      let done = 0
      while (done < chunk.length) done += (await this.spool.write(chunk, done, chunk.length - done, at + done)).bytesWritten
    } catch (err) {
      throw noSpace(err, this.spoolPath)
    }
  }

  /** A staged block's bytes (after `flush`; the caller knows it is staged). */
  async get (cid: CID): Promise<Uint8Array> {
    const e = this.index.get(cid.toString())
    if (e == null) throw new RangeError(`block ${cid.toString()} is not staged`)
    const buf = Buffer.allocUnsafe(e.length)
    let done = 0
    while (done < e.length) {
      const { bytesRead } = await this.spool.read(buf, done, e.length - done, e.offset + done)
      if (bytesRead === 0) throw new RangeError(`the spool ends inside block ${cid.toString()}`)
      done += bytesRead
    }
    return buf
  }

  /**
   * Writes `cids` into the blockstore (a block it holds already is left as it is). Returns the
   * blocks that were added, so that a failure later can take them out again; a failure here
   * takes out what it added.
   */
  async commit (cids: Iterable<CID>, target: CommitTarget, log: Logger, signal?: AbortSignal): Promise<CID[]> {
    const added: CID[] = []
    const it = cids[Symbol.iterator]()
    let failed: unknown
    const worker = async (): Promise<void> => {
      while (failed == null) {
        const next = it.next()
        if (next.done === true) return
        const cid = next.value
        try {
          signal?.throwIfAborted()
          if (await target.has(cid)) continue
          await target.put(cid, await this.get(cid))
          added.push(cid)
        } catch (err) {
          failed ??= err
        }
      }
    }
    await Promise.all(Array.from({ length: STAGING_DEFAULTS.commitConcurrency }, worker))
    if (failed != null) {
      await Staging.uncommit(added, target, log)
      throw noSpace(failed, this.dir)
    }
    return added
  }

  /** Takes blocks added by `commit` out of the store again. */
  static async uncommit (added: CID[], target: CommitTarget, log: Logger): Promise<void> {
    for (const cid of added) {
      await target.delete(cid).catch((err: Error) => { log.warn({ cid: cid.toString(), err: err.message }, 'cannot remove a block of a failed import') })
    }
  }

  /** Closes and removes the spool and its folder. */
  async remove (): Promise<void> {
    await this.spool.close().catch(() => {})
    active.delete(this.dir)
    await rm(this.dir, { recursive: true, force: true })
  }
}
