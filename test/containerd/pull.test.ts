import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { pullImage, type PullEvent } from '../../src/containerd/index.js'
import { IpfsImageReader } from '../../src/ipfs/index.js'
import { createNode, type IpfsNode } from '../../src/ipfs/index.js'
import { pino } from 'pino'
import { silentLogger } from '../../src/logging.js'
import { resolveImages, parseConfig } from '../../src/oci/index.js'
import { Snapshotter, SnapshotterServer } from '../../src/snapshotter/index.js'
import { ChunkCache, LayerMounter, MountManager, type RemoteLayerMounter, type RemoteLayerRef, type RemoteMount } from '../../src/fs/index.js'
import { IpfsSource } from '../../src/source/ipfs.js'
import { containerdNeeds, startContainerd, type PrivateContainerd } from '../../scripts/fixtures/containerd.js'
import { hasFuse, needs } from '../helpers/env.js'
import { debianImageNeeds } from '../../scripts/fixtures/debian-image.js'
import { pushedDebianRepo } from '../../scripts/fixtures/pushed-debian.js'
import { LABELS, chainIds, type Labels } from '../../src/wire/index.js'

/**
 * Stands in for the FUSE mounter: records every Prepare's labels and "mounts" by doing nothing
 * (the snapshot's fs stays an empty directory), or fails for the CIDs in `failCids` so the
 * snapshotter falls back to a normal snapshot.
 */
class RecordingMounter implements RemoteLayerMounter {
  readonly calls: Array<{ labels: Labels, layer: RemoteLayerRef }> = []
  failCids = new Set<string>()

  async mount (_mountpoint: string, labels: Labels, layer: RemoteLayerRef): Promise<RemoteMount> {
    this.calls.push({ labels, layer })
    if (this.failCids.has(layer.cid)) throw new Error(`cannot fetch ${layer.cid}`)
    return {}
  }

  async unmount (): Promise<void> {}
}

describe.skipIf(needs({ ...containerdNeeds, ...debianImageNeeds, fuse: hasFuse }))('pullImage from IPFS into a private containerd (debootstrap + python3 image)', () => {
  let dir: string
  let repo: string
  let rootCid: string
  let node: IpfsNode | undefined
  let ctrd: PrivateContainerd | undefined
  let server: SnapshotterServer | undefined
  const mounter = new RecordingMounter()
  // the real lazy path, in this process: FUSE layers served from the test's Helia node
  let fuseServer: SnapshotterServer | undefined
  let fuseMounts: MountManager | undefined
  let blockBytesRead = 0

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pull-'))
    repo = join(dir, 'repo')
    rootCid = (await pushedDebianRepo(repo)).root
    node = await createNode({ repo, logger: silentLogger() })
    const snapshotter = new Snapshotter({ logger: silentLogger(), mounter }, { root: join(dir, 'snapshotter') })
    server = new SnapshotterServer({ snapshotter, logger: silentLogger() }, { address: join(dir, 'sn.sock') })
    await server.start()
    const helia = node.helia
    fuseMounts = new MountManager({ logger: silentLogger() }, { root: join(dir, 'fuse-sn') })
    const layerMounter = new LayerMounter({
      logger: silentLogger(),
      mounts: fuseMounts,
      cache: new ChunkCache({ logger: silentLogger() }),
      openSource: async (cid, signal) => await IpfsSource.open(helia.blockstore, cid, { signal, offline: true, onBlock: (b) => { blockBytesRead += b.bytes } })
    })
    const fuseSnapshotter = new Snapshotter({ logger: silentLogger(), mounter: layerMounter }, { root: join(dir, 'fuse-sn') })
    fuseServer = new SnapshotterServer({ snapshotter: fuseSnapshotter, logger: silentLogger() }, { address: join(dir, 'fuse.sock') })
    await fuseServer.start()
    ctrd = await startContainerd({ proxyPlugins: { 'ipfs-estargz': join(dir, 'sn.sock'), 'ipfs-estargz-fuse': join(dir, 'fuse.sock') } })
  }, 900_000)

  afterAll(async () => {
    // containerd first (it holds mounts of our snapshots), then the snapshotter, then the node
    await ctrd?.stop()
    await server?.stop()
    await fuseServer?.stop()
    await fuseMounts?.stop()
    await node?.stop()
    if (dir != null) {
      // belt and braces: never leave a mount behind under the temp dir
      for (const m of readFileSync('/proc/mounts', 'utf8').split('\n').map(l => l.split(' ')[1]).filter(m => m?.startsWith(dir))) {
        try { execFileSync('umount', ['-l', m]) } catch { /* already gone */ }
      }
    }
    await new Promise(resolve => setTimeout(resolve, 1500)) // npm-stack pitfall 15
    if (dir != null) await rm(dir, { recursive: true, force: true })
  })

  it('pulls with overlayfs (full path), and ctr runs python3 from it', async () => {
    const c = ctrd as PrivateContainerd
    const source = await IpfsImageReader.open((node as IpfsNode).blocks, rootCid, { offline: true })
    const name = `ipfs://${rootCid}`
    const events: PullEvent[] = []
    const res = await pullImage({ client: c.client, source, name, snapshotter: 'overlayfs', lazy: false, onProgress: (e) => events.push(e) })

    const resolved = await resolveImages(source)
    const img = resolved.images[0]
    const chain = chainIds(img.config.rootfs.diff_ids)
    expect(res.layers.map(l => l.chainId)).toEqual(chain)
    expect(res.layers.every(l => !l.lazy && !l.existed && l.fallbackReason === 'lazy layers are off for this pull')).toBe(true)
    expect(res.chainId).toBe(chain[chain.length - 1])
    const docs = img.manifestBytes.length + img.configBytes.length + resolved.indexes.reduce((n, i) => n + i.bytes.length, 0)
    expect(res.bytesWritten).toBe(docs + img.layers.reduce((n, l) => n + l.size, 0))
    expect(events.filter(e => e.type === 'layer' && e.state === 'applied')).toHaveLength(img.layers.length)

    // GC labels as containerd's pull sets them
    const manifestInfo = await c.client.content.info(img.descriptor.digest)
    expect(manifestInfo.labels[`${LABELS.gcRefContent}config`]).toBe(img.manifest.config.digest)
    img.layers.forEach((l, i) => { expect(manifestInfo.labels[`${LABELS.gcRefContent}l.${i}`]).toBe(l.digest) })
    expect((await c.client.content.info(img.manifest.config.digest)).labels[`${LABELS.gcRefSnapshot}overlayfs`]).toBe(res.chainId)
    for (const [i, l] of img.layers.entries()) {
      expect((await c.client.content.info(l.digest)).labels[LABELS.uncompressed]).toBe(img.config.rootfs.diff_ids[i])
    }
    const record = await c.client.images.get(name)
    expect(record.target.digest).toBe(resolved.root.digest)
    // the lease is gone, and a GC pass keeps everything (referenced from the image record)
    expect(await c.client.leases.list()).toEqual([])
    await c.client.images.delete('nothing-to-delete', { sync: true }).catch(() => {})

    const out = await c.ctr(['run', '--rm', '--snapshotter', 'overlayfs', name, 'pull-test-1', 'python3', '-c', 'print(6*7)'])
    expect(out.trim()).toBe('42')
    expect(await c.ctr(['images', 'ls', '-q'])).toContain(name)
    const snaps = await c.ctr(['snapshots', '--snapshotter', 'overlayfs', 'ls'])
    for (const id of chain) expect(snaps).toContain(id)

    // a second pull finds every layer unpacked and writes nothing
    const again = await pullImage({ client: c.client, source, name, snapshotter: 'overlayfs', lazy: false })
    expect(again.layers.every(l => l.existed)).toBe(true)
    expect(again.bytesWritten).toBe(0)
  })

  it('lazy pull: Prepare carries the remote-snapshot labels, AlreadyExists makes the layer lazy, no layer is downloaded', async () => {
    const c = ctrd as PrivateContainerd
    const source = await IpfsImageReader.open((node as IpfsNode).blocks, rootCid, { offline: true })
    const name = `ipfs://${rootCid}`
    const resolved = await resolveImages(source)
    const img = resolved.images[0]
    const chain = chainIds(img.config.rootfs.diff_ids)
    const client = c.client.withNamespace('lazy')
    mounter.calls.length = 0

    const res = await pullImage({ client, source, name, snapshotter: 'ipfs-estargz', lazy: true, labelsFor: (l) => ({ 'containerd.io/snapshot/test.index': String(l.index) }) })
    expect(res.layers.map(l => l.lazy)).toEqual(img.layers.map(() => true))
    const docs = img.manifestBytes.length + img.configBytes.length + resolved.indexes.reduce((n, i) => n + i.bytes.length, 0)
    expect(res.bytesWritten).toBe(docs)
    for (const l of img.layers) expect(await client.content.has(l.digest)).toBe(false)

    expect(mounter.calls).toHaveLength(img.layers.length)
    for (const [i, call] of mounter.calls.entries()) {
      const l = img.layers[i]
      const cid = (await source.cidOf(l)).toString()
      expect(call.layer.cid).toBe(cid)
      expect(res.layers[i].cid).toBe(cid)
      expect(call.labels).toMatchObject({
        [LABELS.snapshotRef]: chain[i],
        [LABELS.remoteUrls]: `ipfs://${cid}`,
        [LABELS.tocDigest]: l.annotations?.[LABELS.tocDigest],
        [LABELS.criLayerDigest]: l.digest,
        [LABELS.criManifestDigest]: img.descriptor.digest,
        [LABELS.criImageRef]: name,
        [LABELS.stargzReference]: name,
        [LABELS.stargzDigest]: l.digest,
        [LABELS.stargzLayers]: img.layers.slice(i).map(x => x.digest).join(','),
        [LABELS.criImageLayers]: img.layers.slice(i).map(x => x.digest).join(','),
        [`${LABELS.remoteUrls}.0`]: `ipfs://${cid}`,
        // containerd passes only containerd.io/snapshot/ labels on to the snapshotter
        'containerd.io/snapshot/test.index': String(i)
      })
      expect(call.labels[LABELS.tocDigest]).toMatch(/^sha256:/)
    }
    // the chain is committed in containerd (through our snapshotter) and the config references it
    const snaps = await c.ctr(['snapshots', '--snapshotter', 'ipfs-estargz', 'ls'], { namespace: 'lazy' })
    for (const id of chain) expect(snaps).toContain(id)
    expect((await client.content.info(img.manifest.config.digest)).labels[`${LABELS.gcRefSnapshot}ipfs-estargz`]).toBe(res.chainId)
    expect((await client.images.get(name)).target.digest).toBe(resolved.root.digest)
    expect(parseConfig(img.configBytes, img.manifest.config.digest).rootfs.diff_ids).toHaveLength(img.layers.length)
  })

  it('lazy pull falls back to download + apply for a layer the snapshotter cannot mount', async () => {
    const c = ctrd as PrivateContainerd
    const source = await IpfsImageReader.open((node as IpfsNode).blocks, rootCid, { offline: true })
    const img = (await resolveImages(source)).images[0]
    const top = img.layers[img.layers.length - 1]
    mounter.failCids = new Set([(await source.cidOf(top)).toString()])
    const client = c.client.withNamespace('fallback')
    try {
      const events: PullEvent[] = []
      const logged: Array<{ level: number, msg: string, fellBack?: unknown }> = []
      const logger = pino({ level: 'info' }, { write: (line: string) => { logged.push(JSON.parse(line) as typeof logged[number]) } })
      const res = await pullImage({ client, source, name: `ipfs://${rootCid}`, snapshotter: 'ipfs-estargz', lazy: true, onProgress: (e) => events.push(e), logger })
      expect(res.layers.map(l => l.lazy)).toEqual(img.layers.map((_, i) => i < img.layers.length - 1))
      expect(res.layers[res.layers.length - 1].bytesWritten).toBe(top.size)
      // the snapshotter's reason, read through containerd's Stat of the extraction snapshot
      const topCid = (await source.cidOf(top)).toString()
      const reason = `mount-failed: lazy mount of ${topCid} failed: cannot fetch ${topCid}`
      expect(res.layers.map(l => l.fallbackReason)).toEqual(img.layers.map((_, i) => i < img.layers.length - 1 ? undefined : reason))
      expect(events).toContainEqual(expect.objectContaining({ type: 'layer', state: 'applying', index: img.layers.length - 1, fallbackReason: reason }))
      expect((await client.content.info(top.digest)).labels[LABELS.uncompressed]).toBe(img.config.rootfs.diff_ids[img.layers.length - 1])
      // the pull's summary is a warning naming the layer that fell back, not an info line
      expect(logged.filter(l => l.msg.startsWith('image pulled'))).toEqual([expect.objectContaining({ level: 40, fellBack: [{ index: img.layers.length, reason }] })])
    } finally {
      mounter.failCids = new Set()
    }
  })

  it('a cancelled pull leaves no image, no lease and no extraction snapshot behind', async () => {
    const c = ctrd as PrivateContainerd
    const source = await IpfsImageReader.open((node as IpfsNode).blocks, rootCid, { offline: true })
    const client = c.client.withNamespace('cancel')
    const ac = new AbortController()
    const err = await pullImage({
      client,
      source,
      name: 'cancelled',
      snapshotter: 'overlayfs',
      lazy: false,
      signal: ac.signal,
      onProgress: (e) => { if (e.type === 'layer' && e.state === 'applying') ac.abort() }
    }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(Error)
    expect((err as { code?: string }).code ?? (err as Error).name).toMatch(/CANCELLED|ABORT_ERR|AbortError/)
    await expect(client.images.get('cancelled')).rejects.toMatchObject({ code: 'ERR_CONTAINERD_NOT_FOUND' })
    expect(await client.leases.list()).toEqual([])
    const left: string[] = []
    for await (const i of client.snapshots('overlayfs').list()) left.push(`${i.kind} ${i.name}`)
    expect(left).toEqual([])
  })

  it('lazy pull through the real FUSE snapshotter: ctr runs python3 on lazily mounted layers', async () => {
    const c = ctrd as PrivateContainerd
    const source = await IpfsImageReader.open((node as IpfsNode).blocks, rootCid, { offline: true })
    const name = `ipfs://${rootCid}`
    const img = (await resolveImages(source)).images[0]
    const imageBytes = img.layers.reduce((n, l) => n + l.size, 0)
    blockBytesRead = 0
    const res = await pullImage({ client: c.client.withNamespace('fuse'), source, name, snapshotter: 'ipfs-estargz-fuse', lazy: true })
    expect(res.layers.every(l => l.lazy)).toBe(true)
    const pulled = blockBytesRead
    const out = await c.ctr(['run', '--rm', '--snapshotter', 'ipfs-estargz-fuse', name, 'pull-test-fuse', 'python3', '-c', 'print(6*7)'], { namespace: 'fuse' })
    expect(out.trim()).toBe('42')
    console.log(`lazy: layer bytes read at pull ${pulled} (footer + TOC), after run ${blockBytesRead} of ${imageBytes} (${(100 * blockBytesRead / imageBytes).toFixed(1)} %)`)
    expect(blockBytesRead).toBeLessThan(imageBytes)
  })
})
