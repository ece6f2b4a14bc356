/**
 * Mirror mode: an HTTP listener that serves the repo's images to stock OCI clients (the read
 * side of the Distribution API) and its blocks to IPFS clients (a trustless gateway), and the
 * containerd `hosts.toml` that points containerd at it.
 */
export * from './errors.js'
export { MirrorServer, isLoopback, parseAddress, type MirrorOptions, type MirrorComponents, type MirrorStats } from './server.js'
export { DEFAULTS } from './defaults.js'
export { BasicAuth, credentialLine, AUTH_DEFAULTS } from './auth.js'
export { hostsToml, type HostsTomlOptions } from './hosts-toml.js'
export { isValidName, isValidTag, IPFS_NAME_PREFIX } from './names.js'
