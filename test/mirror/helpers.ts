import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { convertImage, IpfsPublisher, LayoutPublisher } from '../../src/convert/index.js'
import { openRepo, type OpenRepo } from '../../src/ipfs/index.js'
import { silentLogger, type Logger } from '../../src/logging.js'
import { MirrorServer, type MirrorOptions } from '../../src/mirror/index.js'
import { MediaType, openOciLayout, type Index } from '../../src/oci/index.js'
import { allBlobs, jsonBlob, makeImage, tagged, writeLayout } from '../../scripts/fixtures/oci-image.js'

const logger = silentLogger()

/** A repo holding a converted 2-platform image (layers of a few MiB, so blobs span many leaves). */
export interface MirrorFixture {
  dir: string
  repo: OpenRepo
  /** The image's root CID. */
  root: string
  /** The converted image as an OCI layout (the source bytes to compare with). */
  layout: string
  cleanup: () => Promise<void>
}

export async function mirrorFixture (opts: { listen?: string[] } = {}): Promise<MirrorFixture> {
  const dir = await mkdtemp(join(tmpdir(), 'mirror-'))
  // incompressible layers of a few MiB: a blob of several 1 MiB leaves under interior nodes
  const images = [
    makeImage({ platform: { os: 'linux', architecture: 'amd64' }, noise: true, layerSize: 6 << 20 }),
    makeImage({ platform: { os: 'linux', architecture: 'arm64', variant: 'v8' }, layerCount: 3 })
  ]
  const index: Index = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: images.map(i => i.manifest.descriptor) }
  const indexBlob = jsonBlob(MediaType.OciIndex, index)
  await writeLayout(join(dir, 'src'), [...images.flatMap(i => allBlobs(i)), indexBlob], [tagged(indexBlob.descriptor, 'latest')])
  await mkdir(join(dir, 'repo'), { recursive: true })
  const repo = await openRepo({ logger }, { repo: join(dir, 'repo'), listen: opts.listen, inboundConnectionsPerSec: 1000 })
  const ipfs = new IpfsPublisher(repo.node, repo.index)
  const layout = join(dir, 'layout')
  const source = await openOciLayout(join(dir, 'src'))
  try {
    await convertImage(source, [ipfs, await LayoutPublisher.open(layout)], { name: 'mirror-test', tmpDir: dir, logger, chunkSize: 64 << 10 })
  } finally {
    await source.close()
  }
  return {
    dir,
    repo,
    root: ipfs.image?.root.toString() ?? '',
    layout,
    cleanup: async () => {
      await repo.close().catch(() => {})
      await new Promise(resolve => setTimeout(resolve, 1500)) // Helia writes its peer record after stop
      await rm(dir, { recursive: true, force: true })
    }
  }
}

/** A mirror serving the fixture's repo on a loopback port of its own; the caller stops it. */
export async function startMirror (fx: Pick<MirrorFixture, 'repo'>, options: Partial<MirrorOptions> = {}, logger: Logger = silentLogger()): Promise<{ mirror: MirrorServer, port: number }> {
  const { repo } = fx
  const mirror = new MirrorServer({ logger, blocks: repo.node.blocks, localBlockstore: repo.node.localBlockstore, index: repo.index }, { address: '127.0.0.1:0', ...options })
  await mirror.start()
  return { mirror, port: Number(new URL(mirror.url).port) }
}
