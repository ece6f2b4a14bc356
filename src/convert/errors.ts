/** Converting an image failed in a way that names the blob. */
export class ConversionError extends Error {
  static readonly code = 'ERR_CONVERSION'
  readonly code = ConversionError.code
  override readonly name = 'ConversionError'
}

/** The operation was aborted (Ctrl-C). */
export class ConversionAbortedError extends Error {
  static readonly code = 'ABORT_ERR'
  readonly code = ConversionAbortedError.code
  override readonly name = 'AbortError'
  constructor (message = 'conversion aborted') {
    super(message)
  }
}
