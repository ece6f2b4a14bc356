/**
 * The daemon: one process with the Helia node over its root, the containerd snapshotter, the
 * FUSE manager it starts and watches (or the lazy mounts itself), and the control API; and its
 * configuration.
 */
export * from './errors.js'
export { Daemon, apiAddressFor, fuseManagerAddressFor, type DaemonComponents, type WarmLayers } from './daemon.js'
export { DEFAULTS, loadConfig, type DaemonConfig } from './config.js'
export { nodeOptionsFor, HeldImages } from './p2p.js'
export type { LayerStats } from './layer-stats.js'
export { sdNotifier, DEFAULTS as SD_NOTIFY_DEFAULTS, type SdNotifier } from './sd-notify.js'
