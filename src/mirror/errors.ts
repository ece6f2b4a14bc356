import { IpfsEstargzError } from '../errors.js'

/**
 * Errors of the mirror's HTTP listener (the pattern is in src/errors.ts). A request that fails is
 * answered, never thrown: the two request errors carry the status (and, for the registry API,
 * the Distribution error code) they are answered with.
 */
export abstract class MirrorError extends IpfsEstargzError {}

/** The `[mirror]` settings cannot be used: a non-loopback address without `public`, half a TLS pair, a bad limit. */
export class MirrorOptionError extends MirrorError { static readonly code = 'ERR_MIRROR_OPTION' }

/** The credentials file cannot be read or has a line that is not `USER:$scrypt$SALT$KEY`. */
export class MirrorCredentialsError extends MirrorError { static readonly code = 'ERR_MIRROR_CREDENTIALS' }

/**
 * A registry API request refused or failed, answered with `status` and the Distribution error
 * body `{"errors":[{"code": ociCode, "message", "detail"}]}`.
 */
export class DistributionError extends MirrorError {
  static readonly code = 'ERR_MIRROR_DISTRIBUTION'
  constructor (readonly status: number, readonly ociCode: string, message: string, readonly detail?: unknown, options?: ErrorOptions) {
    super(message, options)
  }
}

/** A trustless-gateway request refused or failed, answered with `status` and the message as text. */
export class GatewayRequestError extends MirrorError {
  static readonly code = 'ERR_MIRROR_GATEWAY_REQUEST'
  constructor (readonly status: number, message: string, options?: ErrorOptions) {
    super(message, options)
  }
}
