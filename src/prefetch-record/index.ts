/**
 * Learned prefetch: recording the order in which a layer's bytes are first read, sharing it with
 * peers as a small record block, and prefetching in a peer's recorded order (docs/learned-prefetch.md).
 */
export * from './errors.js'
export { LearnedPrefetch, DEFAULTS, type LearnedPrefetchComponents, type LearnedPrefetchOptions, type LearnedPrefetchStats } from './learned.js'
export { Recorder, DEFAULTS as RECORDER_DEFAULTS, type RecorderOptions, type Recording } from './recorder.js'
export { RecordProtocol, PROTOCOL as PREFETCH_RECORD_PROTOCOL, DEFAULTS as PROTOCOL_DEFAULTS, type RecordProtocolOptions, type RecordProtocolStats, type RecordAnswer, type RecordPointer } from './protocol.js'
export { encodeRecord, decodeRecord, recordCid, DEFAULTS as RECORD_DEFAULTS, type PrefetchRecord, type RecordLimits } from './record.js'
export { prefetchInOrder, DEFAULTS as PREFETCH_DEFAULTS, type PrefetchOptions, type PrefetchResult } from './prefetch.js'
export { KnownRecords, type KnownRecord } from './known.js'
