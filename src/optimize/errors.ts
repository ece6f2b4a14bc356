/**
 * One error class per failure of workload optimization, each with a stable `code`. Messages are
 * one line and name the file, line or layer that failed.
 */
export abstract class OptimizeError extends Error {
  abstract readonly code: string
}

/** An access record (`--record-in`) is not JSON lines of `{path, manifestDigest, layerIndex}`. */
export class BadRecordError extends OptimizeError {
  static readonly code = 'ERR_BAD_RECORD'
  readonly code = BadRecordError.code
  override readonly name = 'BadRecordError'
}

/** A record names a manifest or layer the source image does not have. */
export class RecordMismatchError extends OptimizeError {
  static readonly code = 'ERR_RECORD_MISMATCH'
  readonly code = RecordMismatchError.code
  override readonly name = 'RecordMismatchError'
}

/** A prefetch list has a bad line, or names a path that is in no layer of the image. */
export class BadPrefetchListError extends OptimizeError {
  static readonly code = 'ERR_BAD_PREFETCH_LIST'
  readonly code = BadPrefetchListError.code
  override readonly name = 'BadPrefetchListError'
}

/** Neither the image's config nor the options say what to run. */
export class NoWorkloadError extends OptimizeError {
  static readonly code = 'ERR_NO_WORKLOAD'
  readonly code = NoWorkloadError.code
  override readonly name = 'NoWorkloadError'
}

/** The workload's user or group is not a number and not in the image's /etc/passwd or /etc/group. */
export class UnknownUserError extends OptimizeError {
  static readonly code = 'ERR_UNKNOWN_USER'
  readonly code = UnknownUserError.code
  override readonly name = 'UnknownUserError'
}

/** The sandbox could not be set up (a tool missing, a mount refused) or did not go away. */
export class SandboxError extends OptimizeError {
  static readonly code = 'ERR_SANDBOX'
  readonly code = SandboxError.code
  override readonly name = 'SandboxError'
}

/** No manifest of the source is for this machine's platform, so its workload cannot run here. */
export class NoRunnableImageError extends OptimizeError {
  static readonly code = 'ERR_NO_RUNNABLE_IMAGE'
  readonly code = NoRunnableImageError.code
  override readonly name = 'NoRunnableImageError'
}

/** The workload ran but opened no file of the image (it could not start: a wrong command, cwd or user). */
export class NothingRecordedError extends OptimizeError {
  static readonly code = 'ERR_NOTHING_RECORDED'
  readonly code = NothingRecordedError.code
  override readonly name = 'NothingRecordedError'
}
