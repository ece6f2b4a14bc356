import { IpfsEstargzError } from '../errors.js'

/**
 * One error class per failure of workload optimization (the pattern is in src/errors.ts).
 * Messages are one line and name the file, line or layer that failed.
 */
export abstract class OptimizeError extends IpfsEstargzError {}

/** An access record (`--record-in`) is not JSON lines of `{path, manifestDigest, layerIndex}`. */
export class BadRecordError extends OptimizeError { static readonly code = 'ERR_BAD_RECORD' }

/** A record names a manifest or layer the source image does not have. */
export class RecordMismatchError extends OptimizeError { static readonly code = 'ERR_RECORD_MISMATCH' }

/** A prefetch list has a bad line, or names a path that is in no layer of the image. */
export class BadPrefetchListError extends OptimizeError { static readonly code = 'ERR_BAD_PREFETCH_LIST' }

/** Neither the image's config nor the options say what to run. */
export class NoWorkloadError extends OptimizeError { static readonly code = 'ERR_NO_WORKLOAD' }

/** The workload's user or group is not a number and not in the image's /etc/passwd or /etc/group. */
export class UnknownUserError extends OptimizeError { static readonly code = 'ERR_UNKNOWN_USER' }

/** The sandbox could not be set up (a tool missing, a mount refused) or did not go away. */
export class SandboxError extends OptimizeError { static readonly code = 'ERR_SANDBOX' }

/** No manifest of the source is for this machine's platform, so its workload cannot run here. */
export class NoRunnableImageError extends OptimizeError { static readonly code = 'ERR_NO_RUNNABLE_IMAGE' }

/** The workload ran but opened no file of the image (it could not start: a wrong command, cwd or user). */
export class NothingRecordedError extends OptimizeError { static readonly code = 'ERR_NOTHING_RECORDED' }
