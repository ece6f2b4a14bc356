/**
 * The IPFS side: the embedded Helia node, member-aligned import, the OCI-layout directory, an
 * image in IPFS as an ImageReader, the digest→CID index and image list.
 */
export * from './errors.js'
export { resolveRepoPath, lockRepo, DEFAULTS as REPO_DEFAULTS, type RepoLock } from './repo.js'
export { lengthPrefixed } from './length-prefix.js'
export { BlockExchange, PROTOCOL as BLOCK_EXCHANGE_PROTOCOL, DEFAULTS as BLOCK_EXCHANGE_DEFAULTS, type BlockExchangeOptions, type BlockExchangeComponents, type BlockExchangeStats, type BlockPriority, type ExchangeBlockstore } from './block-exchange.js'
export { createNode, DEFAULTS as NODE_DEFAULTS, type BlockFetchPath, type IpfsNode, type NodeOptions, type HeliaNode } from './node.js'
export { BlockFetcher, DEFAULTS as FETCH_DEFAULTS, type FetcherOptions, type FetchOptions, type StageStats } from './fetcher.js'
export { GatewayClient, DEFAULTS as GATEWAY_DEFAULTS, type GatewayOptions } from './gateway.js'
export { importSegments, importBytes, importStream, type ImportOptions, type ImportResult, type ImportProgress } from './import.js'
export { publishLayout, resolvePath, resolveBlob, unixfsOf, type LayoutInput } from './directory.js'
export { openRepo, type OpenRepo } from './open-repo.js'
export { IpfsImageReader, parseIpfsRef, cidOfDescriptor } from './image-reader.js'
export { IndexStore, type ImageRecord, type DigestMapping, type IndexStoreComponents } from './index-store.js'
export { UnixfsFileReader, collectBlock, verifyBlock, decodeFileNode, type BlockGetter, type FileNode } from './dag-reader.js'
export { walkDag } from './walk.js'
export { Discovery, DEFAULTS as DISCOVERY_DEFAULTS, type DiscoveryOptions, type DiscoveryStats } from './discovery.js'
export { generateSwarmKey, parseSwarmKey, readSwarmKey, SWARM_KEY } from './swarm-key.js'
export { Collector, GcGuard, collectGarbage, lowWater, blockKey, DEFAULTS as GC_DEFAULTS, type GcReport, type ChunkGcReport, type GcOptions, type GcComponents, type GcBlockstore, type Lease } from './gc.js'
export { pinRoot, unpinRoot, getPin, listPins, localWalker, type PinInfo, type PinComponents } from './pins.js'
export { createLocalBlockstore, BLOCKSTORE_KINDS, DEFAULTS as BLOCKSTORE_DEFAULTS, type BlockstoreKind, type LocalBlockstore } from './local-blockstore.js'
export { PackBlockstore, DEFAULTS as PACK_BLOCKSTORE_DEFAULTS } from './pack-blockstore.js'
