/** Name of the TOC entry, the last tar entry of every eStargz blob. */
export const TOC_TAR_NAME = 'stargz.index.json'
/** Marks the end of the prioritized (prefetched) region. */
export const PREFETCH_LANDMARK = '.prefetch.landmark'
/** Placed first when a layer has no prioritized files: "prefetch nothing". */
export const NO_PREFETCH_LANDMARK = '.no.prefetch.landmark'
/** The single content byte of a landmark file. */
export const LANDMARK_CONTENTS = 0x0f

/** eStargz footer: gzip header with an `SG` extra subfield holding `%016xSTARGZ`. */
export const FOOTER_SIZE = 51
/** CRFS/stargz footer: the same without the subfield framing. */
export const LEGACY_FOOTER_SIZE = 47

/** Layer annotation / snapshot label holding the TOC digest. */
export const TOC_DIGEST_ANNOTATION = 'containerd.io/snapshot/stargz/toc.digest'
/** Layer annotation holding the uncompressed size (used by Podman's stargz store). */
export const UNCOMPRESSED_SIZE_ANNOTATION = 'io.containers.estargz.uncompressed-size'

/** Every default of the format library, in one place. */
export const DEFAULTS = {
  /** Bytes of file data per gzip member (the reference's default, 4 MiB). */
  chunkSize: 4 << 20,
  /** gzip level; 9 like the reference (`gzip.BestCompression`). */
  compressionLevel: 9,
  /** Members compressed at once; zlib runs them on libuv's thread pool. */
  concurrency: 4,
  /** Largest compressed TOC member the reader fetches. */
  maxTocCompressedSize: 64 << 20,
  /** Largest decompressed TOC JSON the reader parses. */
  maxTocSize: 256 << 20,
  /** Largest number of links followed when resolving a path. */
  maxLinkDepth: 40
} as const
