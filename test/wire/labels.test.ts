import { describe, expect, it } from 'vitest'
import { LABELS, MAX_LABEL_SIZE, REMOTE_LABEL_VALUE, chainIds, childGcLabels, commaListWithinLimit, inheritedLabels, tocHintOf } from '../../src/wire/labels.js'
import { IPFS_CID_ANNOTATION, MediaType, TOC_CID_ANNOTATION, TOC_OFFSET_ANNOTATION } from '../../src/oci/index.js'
import { sha256 } from '../../scripts/fixtures/digest.js'

const d = (n: number): string => `sha256:${String(n).repeat(64).slice(0, 64)}`

describe('containerd labels', () => {
  it('spells every key as containerd, stargz-snapshotter and snapshots written before expect it', () => {
    expect(LABELS).toEqual({
      gcRefContent: 'containerd.io/gc.ref.content.',
      gcRefSnapshot: 'containerd.io/gc.ref.snapshot.',
      gcRoot: 'containerd.io/gc.root',
      uncompressed: 'containerd.io/uncompressed',
      snapshotRef: 'containerd.io/snapshot.ref',
      inheritedPrefix: 'containerd.io/snapshot/',
      remote: 'containerd.io/snapshot/remote',
      remoteUrls: 'containerd.io/snapshot/remote/urls',
      tocDigest: 'containerd.io/snapshot/stargz/toc.digest',
      criImageRef: 'containerd.io/snapshot/cri.image-ref',
      criLayerDigest: 'containerd.io/snapshot/cri.layer-digest',
      criManifestDigest: 'containerd.io/snapshot/cri.manifest-digest',
      criImageLayers: 'containerd.io/snapshot/cri.image-layers',
      stargzReference: 'containerd.io/snapshot/remote/stargz.reference',
      stargzDigest: 'containerd.io/snapshot/remote/stargz.digest',
      stargzLayers: 'containerd.io/snapshot/remote/stargz.layers',
      annotatedCid: 'containerd.io/snapshot/ipfs-estargz/cid',
      tocCid: 'containerd.io/snapshot/ipfs-estargz/toc.cid',
      tocOffset: 'containerd.io/snapshot/ipfs-estargz/toc.offset',
      cid: 'ipfs-estargz/layer.cid',
      fallbackReason: 'ipfs-estargz/fallback-reason'
    })
    expect(REMOTE_LABEL_VALUE).toBe('remote snapshot')
    // the registry copy's CID annotation, inherited by the snapshot as this label
    expect(LABELS.annotatedCid).toBe(IPFS_CID_ANNOTATION)
    // the TOC hint's annotations, inherited the same way
    expect([LABELS.tocCid, LABELS.tocOffset]).toEqual([TOC_CID_ANNOTATION, TOC_OFFSET_ANNOTATION])
  })

  it('reads a TOC hint only when both keys are there and well formed', () => {
    const cid = 'bafkreiac6cdsfsoebijuejf6dnwyyzezjb47bje4in3gy5pxycjaqnbrhe'
    expect(tocHintOf({ [LABELS.tocCid]: cid, [LABELS.tocOffset]: '1234' })).toEqual({ cid, offset: 1234 })
    expect(tocHintOf({ [LABELS.tocCid]: cid })).toBeUndefined()
    expect(tocHintOf({ [LABELS.tocOffset]: '1' })).toBeUndefined()
    for (const offset of ['-1', '1.5', '', '0x10', '9'.repeat(16)]) expect(tocHintOf({ [LABELS.tocCid]: cid, [LABELS.tocOffset]: offset }), offset).toBeUndefined()
    expect(tocHintOf({ [LABELS.tocCid]: 'not-a-cid', [LABELS.tocOffset]: '1' })).toBeUndefined()
    expect(tocHintOf(undefined)).toBeUndefined()
  })

  it('numbers child GC labels as containerd SetChildrenMappedLabels does', () => {
    expect(childGcLabels([
      { mediaType: MediaType.OciConfig, digest: d(1) },
      { mediaType: MediaType.OciLayerGzip, digest: d(2) },
      { mediaType: MediaType.DockerLayerGzip, digest: d(3) }
    ])).toEqual({
      'containerd.io/gc.ref.content.config': d(1),
      'containerd.io/gc.ref.content.l.0': d(2),
      'containerd.io/gc.ref.content.l.1': d(3)
    })
    expect(childGcLabels([
      { mediaType: MediaType.OciManifest, digest: d(4) },
      { mediaType: MediaType.DockerManifest, digest: d(5) },
      { mediaType: 'application/x-other', digest: d(6) }
    ])).toEqual({
      'containerd.io/gc.ref.content.m.0': d(4),
      'containerd.io/gc.ref.content.m.1': d(5),
      'containerd.io/gc.ref.content.0': d(6)
    })
  })

  it('computes OCI chainIDs', () => {
    const [a, b, c] = [d(1), d(2), d(3)]
    const ab = sha256(`${a} ${b}`)
    const abc = sha256(`${ab} ${c}`)
    expect(chainIds([a, b, c])).toEqual([a, ab, abc])
    expect(chainIds([])).toEqual([])
  })

  it('keeps only the annotations containerd passes on to snapshots', () => {
    expect(inheritedLabels({ [LABELS.tocDigest]: 'x', 'org.opencontainers.image.title': 'y', [LABELS.snapshotRef]: 'z' }))
      .toEqual({ [LABELS.tocDigest]: 'x', [LABELS.snapshotRef]: 'z' })
    expect(inheritedLabels(undefined)).toEqual({})
  })

  it('cuts layer lists at the label size limit, between items', () => {
    const items = Array.from({ length: 100 }, (_, i) => d(i % 10))
    const v = commaListWithinLimit(LABELS.stargzLayers, items)
    expect(Buffer.byteLength(LABELS.stargzLayers) + v.length).toBeLessThanOrEqual(MAX_LABEL_SIZE)
    const n = v.split(',').length
    expect(n).toBeLessThan(100)
    expect(v).toBe(items.slice(0, n).join(','))
    expect(Buffer.byteLength(LABELS.stargzLayers) + v.length + 1 + items[n].length).toBeGreaterThan(MAX_LABEL_SIZE)
    expect(commaListWithinLimit('k', ['a', 'b'])).toBe('a,b')
  })
})
