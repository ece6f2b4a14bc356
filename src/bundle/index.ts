/**
 * Image bundles: images carried across an air gap as one CARv1 file, written from the repo's
 * blocks (`exportBundle`) and read back into another repo only once every block, the DAG's
 * completeness and every blob's digest are checked (`importBundle`).
 */
export * from './errors.js'
export { exportBundle, EXPORT_DEFAULTS, type ExportComponents, type ExportOptions, type ExportResult, type ExportedImage } from './export.js'
export { importBundle, type ImportComponents, type ImportOptions, type ImportResult, type ImportedImage, type BundleProgress } from './import.js'
export { readCar, checkBlock, READER_DEFAULTS, type CarBlock, type CarStream, type ReaderLimits } from './car-reader.js'
export { STAGING_DEFAULTS } from './staging.js'
