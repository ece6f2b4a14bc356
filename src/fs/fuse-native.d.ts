/** Ambient types for fuse-native 2.2.6 (CJS, ships none): only what src/fs/fuse.ts uses. */
declare module 'fuse-native' {
  export interface FuseStat {
    mode: number
    uid: number
    gid: number
    size: number
    dev?: number
    nlink: number
    ino?: number
    rdev?: number
    blksize?: number
    blocks?: number
    /** Dates or milliseconds. */
    atime: Date | number
    mtime: Date | number
    ctime: Date | number
  }

  export interface FuseStatFs {
    bsize: number
    frsize: number
    blocks: number
    bfree: number
    bavail: number
    files: number
    ffree: number
    favail: number
    fsid: number
    flag: number
    namemax: number
  }

  type Cb = (err: number) => void

  export interface FuseOps {
    init?: (cb: Cb) => void
    access?: (path: string, mode: number, cb: Cb) => void
    statfs?: (path: string, cb: (err: number, st?: FuseStatFs) => void) => void
    getattr?: (path: string, cb: (err: number, st?: FuseStat) => void) => void
    fgetattr?: (path: string, fd: number, cb: (err: number, st?: FuseStat) => void) => void
    readdir?: (path: string, cb: (err: number, names?: string[], stats?: FuseStat[]) => void) => void
    readlink?: (path: string, cb: (err: number, target?: string) => void) => void
    getxattr?: (path: string, name: string, position: number, cb: (err: number, value?: Buffer) => void) => void
    listxattr?: (path: string, cb: (err: number, names?: string[]) => void) => void
    open?: (path: string, flags: number, cb: (err: number, fd?: number) => void) => void
    opendir?: (path: string, flags: number, cb: (err: number, fd?: number) => void) => void
    /** `cb(bytesRead)` or `cb(-errno)`; may be called asynchronously. */
    read?: (path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (bytesOrErr: number) => void) => void
    write?: (path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (bytesOrErr: number) => void) => void
    release?: (path: string, fd: number, cb: Cb) => void
    releasedir?: (path: string, fd: number, cb: Cb) => void
    flush?: (path: string, fd: number, cb: Cb) => void
    fsync?: (path: string, datasync: number, fd: number, cb: Cb) => void
    truncate?: (path: string, size: number, cb: Cb) => void
    ftruncate?: (path: string, fd: number, size: number, cb: Cb) => void
    utimens?: (path: string, atime: number, mtime: number, cb: Cb) => void
    chown?: (path: string, uid: number, gid: number, cb: Cb) => void
    chmod?: (path: string, mode: number, cb: Cb) => void
    mknod?: (path: string, mode: number, dev: number, cb: Cb) => void
    setxattr?: (path: string, name: string, value: Buffer, position: number, flags: number, cb: Cb) => void
    removexattr?: (path: string, name: string, cb: Cb) => void
    create?: (path: string, mode: number, cb: (err: number, fd?: number) => void) => void
    unlink?: (path: string, cb: Cb) => void
    rename?: (src: string, dest: string, cb: Cb) => void
    link?: (src: string, dest: string, cb: Cb) => void
    symlink?: (src: string, dest: string, cb: Cb) => void
    mkdir?: (path: string, mode: number, cb: Cb) => void
    rmdir?: (path: string, cb: Cb) => void
  }

  export interface FuseOpts {
    force?: boolean
    mkdir?: boolean
    debug?: boolean
    allowOther?: boolean
    defaultPermissions?: boolean
    kernelCache?: boolean
    autoCache?: boolean
    fsname?: string
    subtype?: string
    entryTimeout?: number
    attrTimeout?: number
    maxRead?: number
    /** Per-operation watchdog in ms (`false` = none); an expired op answers ETIMEDOUT. */
    timeout?: number | false
  }

  /** The native signal: first argument is the result (0, a count, or -errno). */
  export type Signal = (result: number, ...args: unknown[]) => void

  export default class Fuse {
    constructor (mnt: string, ops: FuseOps, opts?: FuseOpts)
    readonly mnt: string
    readonly ops: FuseOps
    mount (cb: (err: Error | null) => void): void
    unmount (cb: (err: Error | null) => void): void
    static unmount (mnt: string, cb: (err: Error | null) => void): void
    protected _fuseOptions (): string
    protected _op_getxattr (signal: Signal, path: string, name: string, valueBuf: Buffer, position: number): void
    protected _op_listxattr (signal: Signal, path: string, listBuf: Buffer): void
    static ENOENT: number
    static EROFS: number
    static EIO: number
    static EINVAL: number
    static ERANGE: number
    static ENODATA: number
  }
}
