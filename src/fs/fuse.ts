import Fuse, { type FuseOps, type FuseStat, type Signal } from 'fuse-native'
import { constants as fsConstants } from 'node:fs'
import { constants } from 'node:os'
import { DEFAULTS } from './config.js'
import { errnoOf, MountError, UnmountError } from './errors.js'
import type { Attr, Entry, LayerFs } from './layer.js'
import { detachMount, startUnmountHelper } from './unmount-helper.js'
import type { Logger } from '../logging.js'

export interface FuseMountOptions {
  attrTimeoutSec?: number
  entryTimeoutSec?: number
  kernelCache?: boolean
  defaultPermissions?: boolean
  allowOther?: boolean | 'auto'
  fsName?: string
  fuseOpTimeoutMs?: number
  unmountTimeoutMs?: number
  /** libfuse debug output on stderr. */
  debug?: boolean
}

export interface FuseMountComponents {
  fs: LayerFs
  logger: Logger
}

const { ERANGE, EROFS } = constants.errno

/**
 * fuse-native unmounts (at close, and before a forced mount) by running `fusermount -uz "<mnt>"`
 * through a shell, with the path only JSON-quoted: `$(…)` or backquotes in a mountpoint's name
 * would run. Its callers look the static up at call time, so this replacement, which passes the
 * path as one argument with no shell (through the process's unmount helper, which the first
 * mount starts: see src/fs/unmount-helper.ts for why), is the one they use.
 */
Fuse.unmount = (mnt: string, cb: (err: Error | null) => void): void => {
  detachMount(mnt).then(() => { cb(null) }, (err: Error) => { cb(err) })
}

/**
 * fuse-native 2.2.6 exposes no `use_ino` (without it libfuse invents inode numbers, so
 * hardlinks would not share one) nor `ro`, and its getxattr/listxattr ignore the caller's
 * buffer size (a value larger than the buffer is reported as fitting). This subclass fixes
 * those three things and nothing else.
 */
class LayerFuse extends Fuse {
  protected override _fuseOptions (): string {
    const base = super._fuseOptions()
    return base === '' ? '-ouse_ino,ro' : `${base},use_ino,ro`
  }

  protected override _op_getxattr (signal: Signal, path: string, name: string, valueBuf: Buffer, position: number): void {
    this.ops.getxattr?.(path, name, position, (err, value) => {
      if (err !== 0) return signal(err, valueBuf.buffer)
      const v = value ?? Buffer.alloc(0)
      if (valueBuf.length === 0) return signal(v.length, valueBuf.buffer)
      if (v.length > valueBuf.length) return signal(-ERANGE, valueBuf.buffer)
      v.copy(valueBuf)
      signal(v.length, valueBuf.buffer)
    })
  }

  protected override _op_listxattr (signal: Signal, path: string, listBuf: Buffer): void {
    this.ops.listxattr?.(path, (err, names) => {
      if (err !== 0) return signal(err, listBuf.buffer)
      const packed = Buffer.concat((names ?? []).map(n => Buffer.from(n + '\0')))
      if (listBuf.length === 0) return signal(packed.length, listBuf.buffer)
      if (packed.length > listBuf.length) return signal(-ERANGE, listBuf.buffer)
      packed.copy(listBuf)
      signal(packed.length, listBuf.buffer)
    })
  }
}

function toStat (a: Attr): FuseStat {
  return { mode: a.mode, uid: a.uid, gid: a.gid, size: a.size, nlink: a.nlink, ino: a.ino, rdev: a.rdev, blksize: a.blksize, blocks: a.blocks, atime: a.mtimeMs, mtime: a.mtimeMs, ctime: a.mtimeMs }
}

/**
 * The thin FUSE adapter: path-based fuse-native operations mapped onto a {@link LayerFs}.
 * Mounted read-only (`ro`), with kernel caching suited to immutable content, `allow_other`
 * when root (overlayfs and containers read it as other users). Unmount detaches lazily, so
 * files still open never make it hang.
 */
export class FuseMount {
  private readonly fs: LayerFs
  private readonly log: Logger
  private readonly opts: Required<FuseMountOptions>
  private readonly handles = new Map<number, Entry>()
  private nextHandle = 1
  private fuse?: LayerFuse

  constructor (components: FuseMountComponents, readonly mountpoint: string, options: FuseMountOptions = {}) {
    this.fs = components.fs
    this.log = components.logger.child({ mountpoint })
    this.opts = {
      attrTimeoutSec: options.attrTimeoutSec ?? DEFAULTS.attrTimeoutSec,
      entryTimeoutSec: options.entryTimeoutSec ?? DEFAULTS.entryTimeoutSec,
      kernelCache: options.kernelCache ?? DEFAULTS.kernelCache,
      defaultPermissions: options.defaultPermissions ?? DEFAULTS.defaultPermissions,
      allowOther: options.allowOther ?? DEFAULTS.allowOther,
      fsName: options.fsName ?? DEFAULTS.fsName,
      fuseOpTimeoutMs: options.fuseOpTimeoutMs ?? DEFAULTS.fuseOpTimeoutMs,
      unmountTimeoutMs: options.unmountTimeoutMs ?? DEFAULTS.unmountTimeoutMs,
      debug: options.debug ?? false
    }
  }

  get mounted (): boolean {
    return this.fuse != null
  }

  /** Open file handles (files the kernel has not released yet). */
  get openFiles (): number {
    return this.handles.size
  }

  /** Mounts (creating the mountpoint, clearing a stale mount left there by a dead process). */
  async mount (): Promise<void> {
    if (this.fuse != null) return
    // before this process's first session: no child of a FUSE-serving process may exit as one of
    // its sessions ends (src/fs/unmount-helper.ts), so every unmount goes through the helper
    startUnmountHelper({ timeoutMs: this.opts.unmountTimeoutMs })
    const allowOther = this.opts.allowOther === 'auto' ? process.getuid?.() === 0 : this.opts.allowOther
    const fuse = new LayerFuse(this.mountpoint, this.ops(), {
      force: true,
      mkdir: true,
      debug: this.opts.debug,
      allowOther,
      defaultPermissions: this.opts.defaultPermissions,
      kernelCache: this.opts.kernelCache,
      attrTimeout: this.opts.attrTimeoutSec,
      entryTimeout: this.opts.entryTimeoutSec,
      fsname: this.opts.fsName,
      timeout: this.opts.fuseOpTimeoutMs
    })
    await new Promise<void>((resolve, reject) => {
      fuse.mount(err => { err == null ? resolve() : reject(new MountError(this.mountpoint, err.message)) })
    })
    this.fuse = fuse
    this.log.info('layer mounted')
  }

  /**
   * Unmounts. fuse-native detaches with `fusermount -uz` (lazy): the mountpoint is free at
   * once, and files still open keep working until closed instead of making unmount hang.
   */
  async unmount (): Promise<void> {
    const fuse = this.fuse
    if (fuse == null) return
    if (this.handles.size > 0) this.log.warn({ openFiles: this.handles.size }, 'unmounting with open files; detaching lazily')
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([
        new Promise<void>((resolve, reject) => {
          fuse.unmount(err => { err == null ? resolve() : reject(new UnmountError(this.mountpoint, err.message)) })
        }),
        new Promise<never>((_resolve, reject) => {
          timer = setTimeout(() => reject(new UnmountError(this.mountpoint, `fusermount did not finish in ${this.opts.unmountTimeoutMs} ms`)), this.opts.unmountTimeoutMs)
        })
      ])
    } finally {
      clearTimeout(timer)
    }
    this.fuse = undefined
    this.log.info('layer unmounted')
  }

  private ops (): FuseOps {
    const fs = this.fs
    const log = this.log
    const fail = (op: string, path: string, err: unknown): number => {
      const errno = errnoOf(err)
      if (errno === constants.errno.EIO || errno === constants.errno.ETIMEDOUT) log.warn({ op, path, err: (err as Error).message }, 'FUSE operation failed')
      return -errno
    }
    // Synchronous LayerFs calls answer through one helper that turns throws into -errno.
    const sync = <T>(op: string, path: string, fn: () => T, cb: (err: number, v?: T) => void): void => {
      let v: T
      try {
        v = fn()
      } catch (err) {
        cb(fail(op, path, err))
        return
      }
      cb(0, v)
    }
    const erofs: (...args: unknown[]) => void = (...args) => {
      const cb = args[args.length - 1] as (err: number) => void
      cb(-EROFS)
    }
    return {
      getattr: (path, cb) => sync('getattr', path, () => toStat(fs.getattr(fs.resolve(path))), cb),
      fgetattr: (path, fd, cb) => sync('fgetattr', path, () => toStat(fs.getattr(this.handles.get(fd) ?? fs.resolve(path))), cb),
      access: (path, mode, cb) => sync('access', path, () => {
        fs.resolve(path)
        if ((mode & fsConstants.W_OK) !== 0) fs.refuseWrite('access for writing', path)
      }, err => cb(err)),
      statfs: (path, cb) => sync('statfs', path, () => fs.statfs(), cb),
      readdir: (path, cb) => {
        let list
        try {
          list = fs.readdir(fs.resolve(path))
        } catch (err) {
          cb(fail('readdir', path, err))
          return
        }
        cb(0, list.map(d => d.name), list.map(d => toStat(fs.getattr(d.entry))))
      },
      opendir: (path, _flags, cb) => sync('opendir', path, () => {
        const e = fs.resolve(path)
        fs.readdir(e) // ENOTDIR for non-directories
        return 0
      }, cb),
      releasedir: (_path, _fd, cb) => cb(0),
      readlink: (path, cb) => sync('readlink', path, () => fs.readlink(fs.resolve(path)), cb),
      getxattr: (path, name, _position, cb) => sync('getxattr', path, () => Buffer.from(fs.getxattr(fs.resolve(path), name)), cb),
      listxattr: (path, cb) => sync('listxattr', path, () => fs.listxattr(fs.resolve(path)), cb),
      open: (path, flags, cb) => sync('open', path, () => {
        const e = fs.resolve(path)
        fs.open(e, flags)
        const fd = this.nextHandle++
        if (this.nextHandle > 0x7fffffff) this.nextHandle = 1
        this.handles.set(fd, e)
        return fd
      }, cb),
      release: (_path, fd, cb) => {
        this.handles.delete(fd)
        cb(0)
      },
      read: (path, fd, buf, len, pos, cb) => {
        let entry: Entry
        try {
          entry = this.handles.get(fd) ?? fs.resolve(path)
        } catch (err) {
          cb(fail('read', path, err))
          return
        }
        fs.read(entry, pos, len).then(data => {
          buf.set(data)
          cb(data.length)
        }, err => cb(fail('read', path, err)))
      },
      write: (_p, _fd, _buf, _len, _pos, cb) => cb(-EROFS),
      // No flush: libfuse answers ENOSYS once and the kernel stops sending FLUSH on close().
      // A synchronous FLUSH to this very process deadlocks it whenever a process holding one
      // of its files open forks (the exec closes the file while the parent waits in spawn).
      truncate: erofs,
      ftruncate: erofs,
      utimens: erofs,
      chown: erofs,
      chmod: erofs,
      mknod: erofs,
      setxattr: erofs,
      removexattr: erofs,
      create: erofs,
      unlink: erofs,
      rename: erofs,
      link: erofs,
      symlink: erofs,
      mkdir: erofs,
      rmdir: erofs
    }
  }
}
