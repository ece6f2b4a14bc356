/**
 * Every default of the layer filesystem (read path, caches, prefetch, FUSE), in one place. The
 * daemon's configuration overrides them per key; each component reads the keys it uses.
 */
export const DEFAULTS = {
  // ---- read path ----
  /** A source read (one coalesced fetch) that takes longer fails the reads waiting on it. */
  fetchTimeoutMs: 30_000,
  /** Adjacent missing chunks of one read are fetched with one source read up to this span. */
  maxCoalesceBytes: 16 << 20,
  /**
   * An on-demand read first makes sure every chunk of the aligned window of this size around it
   * verifies (fetching the missing ones), so a chunk that fails verification fails every read
   * in its window with EIO. The kernel returns the bytes copied before a failed page as a
   * short read, and some readers (Node's `fs.promises.readFile` of a file up to 512 KiB, or of
   * any size with an encoding, which reads in 512 KiB steps) take a short read of a regular
   * file as its end: without the window they would see a truncated file and no error.
   * 0: only the chunks a read touches.
   */
  readWindowBytes: 512 << 10,
  /**
   * A read that misses also fetches the chunks after it in blob order up to this many compressed
   * bytes, in the same source read: small files read together (a directory's, in tar order)
   * then cost one round trip. 0: off.
   */
  neighbourBytes: 0,
  /**
   * Opening a layer reads this many bytes from its end in one read, the footer with them: a TOC
   * member that fits needs no second read. 0: the footer alone. Not more by default: in IPFS the
   * bytes before a TOC are the last files' gzip members, in blocks of their own (~16 KiB leaves
   * of small members, one per member in older pushes), so a blind tail costs tens to hundreds of
   * block fetches to save one; a pushed layer names its TOC's leaf instead (the TOC hint).
   */
  openTailBytes: 0,
  /**
   * Upper bounds (ms) of the buckets of the source-read latency histogram (`stats`, /metrics):
   * powers of two up to 16 s, as the reference's operation latency histograms.
   */
  fetchLatencyBucketsMs: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384] as readonly number[],

  // ---- caches ----
  /** Decompressed, verified chunks kept in memory (LRU by bytes). Small: the kernel page cache (kernel_cache) keeps hot file pages; 64 MiB cost 60 MB more RSS when a whole image is read. */
  memoryCacheBytes: 16 << 20,
  /** Cap of the on-disk chunk cache (LRU eviction by bytes). */
  diskCacheBytes: 20 * 1024 ** 3,
  /** Chunk files of the disk cache kept open between reads (most recently used). */
  openChunkFiles: 64,
  /**
   * A chunk file found on disk that this process did not write is hashed once before it is
   * served (it may be left over from an older, crashed or tampered run); afterwards it is
   * trusted by its content-addressed name for the rest of the process.
   */
  verifyDiskCacheOnLoad: true,

  // ---- prefetch ----
  /** How long a wait for the prioritized files (before `.prefetch.landmark`) lasts. */
  prefetchTimeoutMs: 10_000,
  /**
   * Whether a layer's mount waits for its prioritized files. false, as the reference: the mount
   * answers once the TOC is read and the prefetch goes on; a snapshot stacked on the layer (the
   * container's) waits for it, so a pull's layers prefetch at once instead of one after another.
   */
  waitForPrefetchAtMount: false,
  /** Fetch the rest of the layer in the background after mount. */
  backgroundFetch: true,
  /** Fetches in flight at once for the prioritized files, and for ranges a prefetch record names. */
  prefetchConcurrency: 4,
  /** Background fetches in flight at once. */
  backgroundConcurrency: 2,
  /** Background work starts only after on-demand reads have been quiet this long (5 s, as the reference). */
  backgroundQuietMs: 5_000,
  /** Compressed bytes fetched per background step. */
  backgroundStepBytes: 4 << 20,
  /** Compressed bytes per step of a prefetch in a record's order (`prefetchRanges`). */
  rangeStepBytes: 1 << 20,

  // ---- view ----
  /** Xattrs set to `y` on a directory holding `.wh..wh..opq` (overlayfs' opaque marker). */
  opaqueXattrs: ['trusted.overlay.opaque'] as readonly string[],
  /** Reported as st_blksize; st_blocks is ceil(size / blockSize) × blockSize / 512. */
  blockSize: 4096,

  // ---- FUSE ----
  /** Kernel attribute/entry cache lifetime: the tree never changes, so long is safe. */
  attrTimeoutSec: 60,
  entryTimeoutSec: 60,
  /** Keep file pages in the kernel page cache across opens (contents are immutable). */
  kernelCache: true,
  /** Let the kernel check modes, so a non-root reader cannot read a 0600 file of the layer. */
  defaultPermissions: true,
  /** `allow_other` (needed by overlayfs / containers); `'auto'` = when running as root. */
  allowOther: 'auto' as boolean | 'auto',
  /** fsname shown in /proc/self/mountinfo; also how our own stale mounts are recognised. */
  fsName: 'ipfs-estargz',
  /** fuse-native's per-operation watchdog; must exceed fetchTimeoutMs. */
  fuseOpTimeoutMs: 60_000,
  /** How long unmount waits for `fusermount -u` before detaching lazily (`-uz`). */
  unmountTimeoutMs: 5_000
}

export type FsDefaults = typeof DEFAULTS
