/**
 * Runs a SnapshotterServer in its own process, for the conformance and kill -9 tests:
 *   npx tsx test/snapshotter/server-entry.ts <root> <socket> [--fake-mounter] [--list-timeout-ms=N]
 * Prints `READY` on stdout once the socket accepts calls. With --fake-mounter, remote layers are
 * "mounted" by a tmpfs holding one file, `layer.txt`, containing the CID.
 */
import '../../src/polyfill.js'
import { createLogger } from '../../src/logging.js'
import { Snapshotter } from '../../src/snapshotter/snapshotter.js'
import { SnapshotterServer } from '../../src/snapshotter/service.js'
import { TmpfsMounter } from './fake-mounter.js'

const [root, socket, ...flags] = process.argv.slice(2)
if (root == null || socket == null) {
  console.error('usage: server-entry.ts <root> <socket> [--fake-mounter] [--list-timeout-ms=N]')
  process.exit(2)
}
const logger = createLogger(process.env.IPFS_ESTARGZ_LOG_LEVEL as 'info' | undefined ?? 'warn')
const mounter = flags.includes('--fake-mounter') ? new TmpfsMounter() : undefined
const listTimeout = flags.find((f) => f.startsWith('--list-timeout-ms='))
const snapshotter = new Snapshotter({ logger, ...(mounter != null ? { mounter } : {}) }, {
  root,
  ...(listTimeout != null ? { listTimeoutMs: Number(listTimeout.split('=')[1]) } : {})
})
const server = new SnapshotterServer({ snapshotter, logger }, { address: socket })
await server.start()
process.stdout.write('READY\n')
const shutdown = (): void => {
  server.stop().then(() => process.exit(0), (err: unknown) => { console.error(err); process.exit(1) })
}
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)
