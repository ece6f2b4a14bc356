import { IpfsEstargzError } from '../errors.js'

/**
 * Errors of the daemon: its config, and the CLI's client of its control API (the pattern is in
 * src/errors.ts). A command the CLI cancels (Ctrl-C) ends with the shared AbortError.
 */
export abstract class DaemonError extends IpfsEstargzError {}

/** The config file cannot be read or parsed, or has an unknown setting or a value of the wrong type. */
export class ConfigError extends DaemonError { static readonly code = 'ERR_CONFIG' }

/** Settings that each pass but cannot go together (e.g. a call timeout not above the wait it contains): the daemon refuses to start. */
export class ConfigConflictError extends DaemonError { static readonly code = 'ERR_CONFIG_CONFLICT' }

// The CLI's side of the control API (src/daemon/control-client.ts).

/** A daemon the CLI was pointed at (or whose socket it found) does not answer: it never falls back to another repo. */
export class DaemonUnreachableError extends DaemonError { static readonly code = 'ERR_DAEMON_UNREACHABLE' }

/** The daemon's health route gave no answer within the probe's timeout (the probe reports the daemon down, with this message). */
export class DaemonHealthTimeoutError extends DaemonError { static readonly code = 'ERR_DAEMON_HEALTH_TIMEOUT' }

/** The daemon went away (killed, crashed, stopped) before the command it ran for us ended. */
export class DaemonDisconnectedError extends DaemonError {
  static readonly code = 'ERR_DAEMON_DISCONNECTED'
  constructor (why: string, options?: ErrorOptions) {
    super(`the daemon closed the connection mid-command (${why})`, options)
  }
}

/** The daemon answered something that is not the control protocol. */
export class ControlProtocolError extends DaemonError { static readonly code = 'ERR_CONTROL_PROTOCOL' }

// The control API's server side (src/daemon/control.ts and the blob routes of src/daemon/blob-api.ts).

/**
 * A call the control API refuses or fails without an error of its own: no such route or method,
 * an unknown blob resource, a blob read whose error has no code. Answered with `status` and this
 * code (a malformed call is the shared BadRequestError).
 */
export class ControlApiError extends DaemonError {
  static readonly code = 'ERR_CONTROL_API'
  constructor (message: string, readonly status = 500, options?: ErrorOptions) {
    super(message, options)
  }
}

// The monitoring listener (src/daemon/http.ts).

/** `[http]` names an address that is not HOST:PORT, or not loopback without `public`, or one we cannot listen on. */
export class HttpListenerError extends DaemonError { static readonly code = 'ERR_HTTP_LISTENER' }
