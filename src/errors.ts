/**
 * The one base of our errors, and the few errors every module may throw.
 *
 * Each failure is one class with a stable `code` (`ERR_…`), which the CLI prints after the message
 * (`ipfs-estargz: message (ERR_X)`) and callers may log; callers tell failures apart with
 * `instanceof`, never by name or code. A class says only its code:
 *
 *     export class TocDigestMismatchError extends EstargzError { static readonly code = 'ERR_TOC_DIGEST_MISMATCH' }
 *
 * and the base derives the rest: `code` from the class's `static code`, `name` from the class's
 * own name (`new.target.name`). Names stay stable because nothing minifies this code (tsc only);
 * test/errors.test.ts checks that every error class's name is the name it is exported as and
 * that no two classes share a code. Each module has its own abstract base on this one
 * (EstargzError, OciError, FsError, ...), so `instanceof FsError` says "a failure of the layer
 * filesystem"; a module with a single error lets that class extend this base directly.
 *
 * This module is a leaf: it imports nothing, so any module may depend on it. `src/estargz/`
 * depends on nothing else of ours except this file.
 */

/** What the base reads off an error's class. */
interface ErrorClass {
  readonly name: string
  readonly code?: unknown
}

export abstract class IpfsEstargzError extends Error {
  /** The stable code: the concrete class's `static readonly code`. */
  readonly code: string

  constructor (message?: string, options?: ErrorOptions) {
    super(message, options)
    const cls = new.target as ErrorClass
    // a class without its own code is a bug: fail where it is thrown, not with `undefined` codes in the output
    if (typeof cls.code !== 'string') throw new TypeError(`error class ${cls.name} declares no static code`)
    this.code = cls.code
    this.name = cls.name
  }
}

/** The operation was aborted through its AbortSignal. */
export class AbortError extends IpfsEstargzError {
  static readonly code = 'ABORT_ERR'
  constructor (message = 'the operation was aborted', options?: ErrorOptions) {
    super(message, options)
  }
}

/** A caller passed an option or argument outside its valid range. */
export class InvalidOptionError extends IpfsEstargzError {
  static readonly code = 'ERR_INVALID_OPTION'
}

// A call to one of our HTTP APIs on a unix socket (src/unix-http.ts) that is malformed: the
// server answers it with `status` and the one error body.

/** The call's body is not JSON, or a parameter is invalid. */
export class BadRequestError extends IpfsEstargzError {
  static readonly code = 'ERR_BAD_REQUEST'
  readonly status = 400
}

/** The call's body is larger than the API takes. */
export class BodyTooLargeError extends IpfsEstargzError {
  static readonly code = 'ERR_BODY_TOO_LARGE'
  readonly status = 413
}

/**
 * Whether `err` is an abort: ours, or another library's (the DOMException of
 * `AbortSignal.throwIfAborted()` and fetch, libp2p's and Helia's own classes). Those are not our
 * classes, so they can only be known by their name. Given the operation's `signal`, an error
 * after it fired counts as the abort too (a library may fail in its own way once cancelled).
 */
export function isAbortError (err: unknown, signal?: AbortSignal): boolean {
  return signal?.aborted === true || err instanceof AbortError || (err as { name?: unknown } | null | undefined)?.name === 'AbortError'
}
