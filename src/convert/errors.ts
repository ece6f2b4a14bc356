/** Converting an image failed in a way that names the blob. */
export class ConversionError extends Error {
  static readonly code = 'ERR_CONVERSION'
  readonly code = ConversionError.code
  override readonly name = 'ConversionError'
}
