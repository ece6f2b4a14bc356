/** Workload-optimized eStargz: record what a workload reads first, and rebuild layers with it in front. */
export { DEFAULTS } from './config.js'
export * from './errors.js'
export { optimizeImage, type OptimizeComponents, type OptimizeOptions, type OptimizeResult, type Profile } from './optimize.js'
export { AccessRecorder, formatRecord, parseRecord, prioritizedFilesByLayer, type RecordEntry, type RecordedImage } from './record.js'
export { expandPrefetchList, globToRegExp, parsePrefetchList, type PrefetchPattern } from './prefetch-list.js'
export { listLayerEntries, mergedView, type LayerEntry, type VisibleFile } from './layer-files.js'
export { runInSandbox, type SandboxLayer, type SandboxOptions, type SandboxResult, type SandboxRun, type SandboxRuntime } from './sandbox.js'
export { resolveUser, withHome, workloadOf, type Workload, type WorkloadOverrides, type WorkloadUser } from './workload.js'
