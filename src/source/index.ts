/**
 * Byte-range reads of a blob (`RangeSource`): a local file, a UnixFS file through the node's
 * fetch path, and a read-ahead window over either.
 */
export * from './errors.js'
export type { RangeSource, ReadHint } from './types.js'
export { FileSource } from './file.js'
export { IpfsSource, DEFAULTS as IPFS_SOURCE_DEFAULTS, type IpfsSourceOptions, type FetchStats, type BlockFetch } from './ipfs.js'
export { ReadaheadSource, DEFAULTS as READAHEAD_DEFAULTS, type ReadaheadOptions } from './readahead.js'
