import { CID } from 'multiformats/cid'
import { importBytes, importSegments, publishLayout, type IndexStore, type IpfsNode } from '../ipfs/index.js'
import { TOC_CID_ANNOTATION, TOC_OFFSET_ANNOTATION, type Descriptor } from '../oci/index.js'
import type { BlobPublisher, FinishedImage, PublishedBlob, SegmentProducer } from './publisher.js'

/** What a push to IPFS produced, beyond the root. */
export interface IpfsImage {
  /** CID of the OCI image layout directory: the image's root CID. */
  root: CID
  /** CID of the reference descriptor JSON (what `nerdctl pull ipfs://` takes). */
  descriptor: CID
  /** CID of every blob by digest. */
  blobs: Map<string, CID>
}

export interface IpfsPublisherOptions {
  /** Fixed 256 KiB leaves and 174 links per node, as `ipfs add --cid-version=1`. */
  kuboCompatible?: boolean
}

const OCI_LAYOUT = Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' }))

/**
 * Publishes converted images to the embedded Helia node: layers member-aligned while they are
 * converted, small blobs as plain UnixFS files, then the image as an OCI layout in a UnixFS
 * directory plus the reference descriptor JSON. The image is listed (and pinned) only at
 * `finish`, once every block is stored, so an interrupted push never shows up.
 */
export class IpfsPublisher implements BlobPublisher {
  readonly name = 'ipfs'
  private readonly blobs = new Map<string, CID>()
  /** Set by `finish`. */
  image?: IpfsImage

  constructor (
    private readonly node: IpfsNode,
    private readonly index: IndexStore,
    private readonly options: IpfsPublisherOptions = {}
  ) {}

  async putSegments (produce: SegmentProducer, signal?: AbortSignal): Promise<PublishedBlob> {
    // Straight into the local blockstore: nobody can want these blocks yet (their CIDs are only
    // known once the push ends), and skipping Helia's networked wrapper saved ~10 % of a push.
    const { cid, produced, toc } = await importSegments(this.node.localBlockstore, produce, { kuboCompatible: this.options.kuboCompatible, signal })
    this.blobs.set(produced.digest, cid)
    const annotations = toc != null ? { [TOC_CID_ANNOTATION]: toc.cid.toString(), [TOC_OFFSET_ANNOTATION]: String(toc.offset) } : undefined
    return { urls: [`ipfs://${cid.toString()}`], ...(annotations != null ? { annotations } : {}) }
  }

  async putBytes (desc: Descriptor, bytes: Uint8Array, signal?: AbortSignal): Promise<PublishedBlob> {
    const { cid } = await importBytes(this.node.helia.blockstore, bytes, { kuboCompatible: this.options.kuboCompatible, signal })
    this.blobs.set(desc.digest, cid)
    return { urls: [`ipfs://${cid.toString()}`] }
  }

  async finish (image: FinishedImage, signal?: AbortSignal): Promise<void> {
    const bs = this.node.helia.blockstore
    // The handle the reference IPFS tools take: the root's descriptor, as compact JSON.
    const descriptorJson = Buffer.from(JSON.stringify(image.root))
    const descriptor = (await importBytes(bs, descriptorJson, { kuboCompatible: this.options.kuboCompatible, signal })).cid
    const getBlock = async (cid: CID): Promise<Uint8Array> => {
      const parts: Uint8Array[] = []
      for await (const p of bs.get(cid, { signal }) as AsyncIterable<Uint8Array>) parts.push(p)
      return Buffer.concat(parts)
    }
    const { cid: root } = await publishLayout(bs, getBlock, {
      ociLayout: OCI_LAYOUT,
      index: image.indexJson,
      blobs: [...this.blobs].map(([digest, cid]) => ({ digest, cid }))
    }, { signal })
    await this.index.images.add({
      root: root.toString(),
      name: image.name,
      created: new Date().toISOString(),
      descriptor: descriptor.toString(),
      size: image.blobs.reduce((n, b) => n + b.size, 0),
      meta: { tag: image.tag, mediaType: image.root.mediaType, digest: image.root.digest }
    }, { digests: [...this.blobs].map(([digest, cid]) => ({ digest, cid })), signal })
    this.image = { root, descriptor, blobs: new Map(this.blobs) }
  }

  async abort (): Promise<void> {
    // Blocks already stored are unpinned and unlisted: the next GC reclaims them.
    this.blobs.clear()
  }
}

export { CID }
