import { CID } from 'multiformats/cid'
import {
  IPFS_CID_ANNOTATION, MalformedManifestError, collectBlob, parseIndex, verifyStream, type Descriptor, type ImageReader, REF_NAME_ANNOTATION
} from '../oci/index.js'
import { collectBlock, UnixfsFileReader, type BlockGetter } from './dag-reader.js'
import { isPlainDirectory, resolveBlob, resolvePath, unixfsOf } from './directory.js'
import { InvalidIpfsReferenceError } from './errors.js'
import type { BlockFetchPath } from './node.js'

/** Parses `ipfs://CID`, `/ipfs/CID` or a bare CID. */
export function parseIpfsRef (ref: string): CID {
  const bare = ref.replace(/^ipfs:\/\//, '').replace(/^\/ipfs\//, '').replace(/\/+$/, '')
  try {
    return CID.parse(bare)
  } catch (err) {
    throw new InvalidIpfsReferenceError(ref, { cause: err })
  }
}

/**
 * The CID a descriptor names: in its `urls` (`ipfs://<cid>`, the IPFS copy), else in its CID
 * annotation (the registry copy, see `registryCopy`), if any.
 */
export function cidOfDescriptor (desc: Descriptor): CID | undefined {
  for (const u of desc.urls ?? []) {
    if (u.startsWith('ipfs://')) {
      try { return CID.parse(u.slice('ipfs://'.length)) } catch { /* not ours */ }
    }
  }
  const annotated = desc.annotations?.[IPFS_CID_ANNOTATION]
  if (annotated != null) {
    try { return CID.parse(annotated) } catch { /* not a CID */ }
  }
  return undefined
}

/**
 * An image published in IPFS, opened by its root CID, as an {@link ImageReader}: either our OCI
 * layout directory or a reference descriptor JSON (the handle nerdctl and
 * `ctr-remote --ipfs` use). Every blob is fetched through the Helia node (local blockstore,
 * then peers) and verified against its digest.
 */
export class IpfsImageReader implements ImageReader {
  private constructor (
    readonly name: string,
    private readonly blocks: BlockFetchPath,
    readonly rootCid: CID,
    private readonly rootDesc: Descriptor,
    /** The layout directory, when the root is one. */
    readonly directory: CID | undefined,
    private readonly offline: boolean
  ) {}

  static async open (blocks: BlockFetchPath, ref: string | CID, options: { tag?: string, offline?: boolean, signal?: AbortSignal } = {}): Promise<IpfsImageReader> {
    const cid = typeof ref === 'string' ? parseIpfsRef(ref) : ref
    const name = `ipfs://${cid.toString()}`
    const offline = options.offline ?? false
    const getBlock: BlockGetter = async (c, signal) => await collectBlock(blocks.get(c, { signal: signal ?? options.signal, offline }))
    const isDirectory = await isPlainDirectory(unixfsOf(getBlock), cid, options.signal).catch(() => false)
    let root: Descriptor
    if (isDirectory) {
      const indexCid = await resolvePath(getBlock, cid, 'index.json', options.signal)
      const bytes = await readAll(getBlock, indexCid, options.signal)
      const index = parseIndex(bytes, `index.json of ${name}`)
      const tagged = options.tag != null ? index.manifests.find(m => m.annotations?.[REF_NAME_ANNOTATION] === options.tag) : index.manifests[0]
      if (tagged == null) throw new MalformedManifestError(`${name}: index.json has no image${options.tag != null ? ` tagged ${options.tag}` : ''}`)
      root = tagged
    } else {
      const bytes = await readAll(getBlock, cid, options.signal)
      let doc: unknown
      try { doc = JSON.parse(Buffer.from(bytes).toString('utf8')) } catch { doc = undefined }
      const d = doc as Partial<Descriptor> | undefined
      if (d == null || typeof d.digest !== 'string' || typeof d.mediaType !== 'string' || typeof d.size !== 'number') {
        throw new MalformedManifestError(`${name} is neither an OCI layout directory nor an image descriptor JSON`)
      }
      root = d as Descriptor
    }
    return new IpfsImageReader(name, blocks, cid, root, isDirectory ? cid : undefined, offline)
  }

  async root (): Promise<Descriptor> {
    return this.rootDesc
  }

  /** The CID of a blob: from its `ipfs://` URL, else from `blobs/<alg>/<hex>` of the layout. */
  async cidOf (desc: Descriptor, signal?: AbortSignal): Promise<CID> {
    const fromUrl = cidOfDescriptor(desc)
    if (fromUrl != null) return fromUrl
    if (this.directory == null) throw new MalformedManifestError(`${this.name}: blob ${desc.digest} has no ipfs:// URL`)
    const getBlock: BlockGetter = async (c, s) => await collectBlock(this.blocks.get(c, { signal: s ?? signal, offline: this.offline }))
    return await resolveBlob(getBlock, this.directory, desc.digest, signal)
  }

  /**
   * Streams a blob 1 MiB at a time through the range reader, so memory stays bounded whatever
   * the blob's size (@helia/unixfs `cat` asks for every leaf under a node at once).
   */
  async fetch (desc: Descriptor, signal?: AbortSignal): Promise<AsyncIterable<Uint8Array>> {
    const cid = await this.cidOf(desc, signal)
    const getBlock: BlockGetter = async (c, s) => await collectBlock(this.blocks.get(c, { signal: s ?? signal, offline: this.offline }))
    const reader = await UnixfsFileReader.open(cid, getBlock, { signal })
    async function * chunks (): AsyncGenerator<Uint8Array> {
      for (let at = 0; at < reader.size; at += 1 << 20) yield await reader.read(at, Math.min(1 << 20, reader.size - at), signal)
    }
    return verifyStream(chunks(), desc, this.name)
  }

  async fetchBytes (desc: Descriptor, options: { signal?: AbortSignal, maxBytes?: number } = {}): Promise<Uint8Array> {
    return await collectBlob(this, desc, options)
  }

  async close (): Promise<void> {}
}

async function readAll (getBlock: BlockGetter, cid: CID, signal?: AbortSignal): Promise<Uint8Array> {
  const reader = await UnixfsFileReader.open(cid, getBlock, { signal })
  if (reader.size > 16 << 20) throw new MalformedManifestError(`ipfs://${cid.toString()} is ${reader.size} bytes: too large for an index or descriptor`)
  return await reader.read(0, reader.size, signal)
}
