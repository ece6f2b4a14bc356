import { IpfsEstargzError } from '../errors.js'

/**
 * Errors of learned prefetch (recording, sharing and using prefetch records), one class per
 * failure (the pattern is in src/errors.ts). None of them reaches a container: a record that
 * fails is ignored and the layer is read on demand as without one.
 */
export abstract class PrefetchRecordError extends IpfsEstargzError {}

// Thrown here too; exported so that this module's users find them beside its own errors.
export { AbortError, InvalidOptionError } from '../errors.js'

/**
 * A prefetch record is not one we accept: too large, not JSON of the expected shape, for another
 * layer or another size, created in the future, or naming ranges outside the layer.
 */
export class InvalidPrefetchRecordError extends PrefetchRecordError { static readonly code = 'ERR_INVALID_PREFETCH_RECORD' }

/** A peer broke the prefetch-record protocol's wire format (malformed or oversized frame). */
export class PrefetchRecordProtocolError extends PrefetchRecordError { static readonly code = 'ERR_PREFETCH_RECORD_PROTOCOL' }

/** A peer did not answer (or did not ask) within the protocol's deadline. */
export class PrefetchRecordTimeoutError extends PrefetchRecordError { static readonly code = 'ERR_PREFETCH_RECORD_TIMEOUT' }
