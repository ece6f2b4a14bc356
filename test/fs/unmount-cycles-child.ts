/**
 * A process serving FUSE mounts as the FUSE manager does: mounts `layers` copies of one layer,
 * reads a file of each (asynchronously: this process serves them), unmounts them all, `cycles`
 * times, printing `cycle N` after each, then how many unmounts went through the unmount helper.
 * Usage: node --import tsx test/fs/unmount-cycles-child.ts BLOB TOCDIGEST DIR CYCLES LAYERS
 */
import '../../src/polyfill.js'
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { MountManager } from '../../src/fs/mounts.js'
import { unmountHelper } from '../../src/fs/unmount-helper.js'
import { silentLogger } from '../../src/logging.js'
import { FileSource } from '../../src/source/file.js'

const [blob, tocDigest, dir, cycles, layers] = process.argv.slice(2)
const logger = silentLogger()
const mounts = new MountManager({ logger }, { root: join(dir, 'mnt') })
await mounts.start()
for (let c = 0; c < Number(cycles); c++) {
  const at = Array.from({ length: Number(layers) }, (_, k) => join(dir, 'mnt', `${c % 2}-${k}`))
  for (const mp of at) {
    await mkdir(mp, { recursive: true })
    await mounts.mountLayer(mp, { source: await FileSource.open(blob), logger }, { tocDigest, backgroundFetch: false })
  }
  // one at a time: a read of this process's own mount holds a thread-pool thread until the
  // mount answers, and the answer needs the thread pool too (4 threads)
  for (const mp of at) await readFile(join(mp, 'etc/hello.txt'))
  await Promise.all(at.map(async mp => { await mounts.unmount(mp) }))
  process.stdout.write(`cycle ${c + 1}\n`)
}
process.stdout.write(`detached by the helper: ${unmountHelper()?.counts.detached ?? 0}\n`)
process.stdout.write(`helper pid: ${unmountHelper()?.pid ?? 'none'}\n`)
await mounts.stop()
// and nothing else: the process must end by itself, its helper with it
