import { join } from 'node:path'
import { ChunkCache, LayerMounter, MountManager } from '../../src/fs/index.js'
import { silentLogger } from '../../src/logging.js'
import { hasCommand, hasFuse, isRoot, needs } from '../helpers/env.js'
import { layerMounterSuite } from './layer-mounter-suite.js'

const logger = silentLogger()

// The daemon's mounter without the FUSE manager (and the `mount` command's): mounts in this process.
layerMounterSuite('LayerMounter (in process)', async (env) => {
  const cache = new ChunkCache({ logger }, { dir: join(env.dir, 'cache') })
  await cache.start()
  const mounts = new MountManager({ logger }, { root: join(env.dir, 'mnt') })
  await mounts.start()
  const mounter = new LayerMounter({ logger, mounts, cache, openSource: env.openSource }, env.settings)
  return {
    mounter,
    notFoundCode: 'ERR_BLOCK_NOT_FOUND',
    conflictCode: 'ERR_FS_MOUNT',
    sameLayerAgain: 'ERR_FS_MOUNT',
    cleanup: async () => {
      await mounts.stop()
      await cache.stop()
    }
  }
}, { skip: needs({ root: isRoot, fuse: hasFuse, fusermount: hasCommand('fusermount') }) })
