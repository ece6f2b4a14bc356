/**
 * Mounts one layer and waits forever: the stale-mount test SIGKILLs this process to leave a
 * dead FUSE mount behind. Usage: node --import tsx test/fs/mount-child.ts BLOB TOCDIGEST MNT
 */
import '../../src/polyfill.js'
import { FuseMount } from '../../src/fs/fuse.js'
import { LayerFs } from '../../src/fs/layer.js'
import { silentLogger } from '../../src/logging.js'
import { FileSource } from '../../src/source/file.js'

const [blob, tocDigest, mnt] = process.argv.slice(2)
const logger = silentLogger()
const fs = await LayerFs.open({ source: await FileSource.open(blob), logger }, { tocDigest, backgroundFetch: false })
await fs.start()
await new FuseMount({ fs, logger }, mnt).mount()
process.stdout.write('mounted\n')
setInterval(() => {}, 1 << 30)
