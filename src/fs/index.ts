/** The lazy layer filesystem: verified chunk reads, caches, prefetch, and its FUSE adapter. */
export { DEFAULTS } from './config.js'
export * from './errors.js'
export { ChunkCache, MemoryLru, type ChunkCacheOptions, type ChunkCacheStats } from './cache.js'
export { ChunkReader, type ChunkReaderOptions, type ReadOptions, type ReaderStats } from './chunk-reader.js'
export { Prefetcher, type PrefetchOptions, type PrefetchStatus } from './prefetch.js'
export { LayerFs, makedev, type LayerFsComponents, type LayerFsOptions, type LayerFsStats, type Entry, type Attr, type DirEntry, type StatFs } from './layer.js'
export { FuseMount, type FuseMountOptions } from './fuse.js'
export { MountManager, clearStaleMounts, fuseMountsUnder, parseMountInfo, lazyUnmount, type MountInfo, type MountManagerOptions } from './mounts.js'
