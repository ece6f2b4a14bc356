import { closeSync, openSync } from 'node:fs'
import { join } from 'node:path'
import * as dagPb from '@ipld/dag-pb'
import Database from 'better-sqlite3'
import type { Helia } from 'helia'
import { CID } from 'multiformats/cid'
import type { Logger } from '../logging.js'
import { PRIVATE } from '../private-files.js'
import { collectBlock } from './dag-reader.js'
import { ImageNotListedError, IncompleteImageError, InvalidOptionError, NoSpaceError, spaceErrno } from './errors.js'
import { SqlitePinStore } from './pin-store.js'
import { getPin, pinRoot, unpinRoot, type PinComponents, type PinStore } from './pins.js'
import { walkDag } from './walk.js'

/** Index store defaults, in one place. */
export const DEFAULTS = {
  /** SQLite file inside the repo. */
  file: 'index.sqlite'
} as const

/** An image published in (or imported into) this repo. */
export interface ImageRecord {
  /** CID of the image root (the OCI layout directory). */
  root: string
  /** What the user called it (a reference such as `docker.io/library/alpine:3`, or a path). */
  name: string
  /** ISO 8601 time it was added. */
  created: string
  /** CID of the reference descriptor JSON (the image root's other form, see docs/ipfs.md), if published. */
  descriptor?: string
  /** Total bytes of the blobs it references. */
  size?: number
  /** Anything else worth listing (platforms, layer count, ...). */
  meta?: Record<string, string | number | boolean>
  /** Friendly names (`NAME:TAG`) given with `tag`; filled in by `images.list` and `images.get`. */
  tags?: string[]
}

/** The parts of the node the store needs. */
export interface IndexStoreComponents {
  /**
   * Helia's pins: where older versions pinned (listed and removed there). New pins are rows of
   * this index (`pins`).
   */
  pins: Helia['pins']
  /** The local blockstore only: the completeness check must not fetch from peers. */
  localBlockstore: {
    has: (cid: CID) => Promise<boolean>
    get: (cid: CID) => AsyncIterable<Uint8Array> | Iterable<Uint8Array>
    /** Resolves when every block written so far is durable (throws a write's error, e.g. a full disk). */
    flush?: () => Promise<void>
  }
  logger: Logger
  /** Called after a pin is removed (garbage collection's guard counts it). */
  onUnpin?: () => void
}

export interface DigestMapping {
  digest: string
  cid: CID
}

/**
 * The digest→CID index (lets the snapshotter mount lazily from labels that
 * carry only a layer digest) and the list of images, in one SQLite file under the repo. An image
 * is listed only once every block it references is stored locally and its root is pinned, so an
 * interrupted push or import never shows up.
 */
export class IndexStore {
  private readonly db: Database.Database
  private readonly log: Logger
  /** The pins of this repo: one row per root (garbage collection marks from them). */
  readonly pins: PinStore
  private readonly pinning: PinComponents

  private constructor (private readonly path: string, private readonly components: IndexStoreComponents) {
    this.log = components.logger.child({ component: 'index-store' })
    // Created owner-only before SQLite opens it: its -wal and -shm files take the database's mode.
    closeSync(openSync(path, 'a', PRIVATE.fileMode))
    this.db = new Database(path)
    // The repo lock makes this the only connection: exclusive locking keeps the WAL index in
    // memory instead of a -shm file, which cannot be created on a full disk (reads must work there).
    this.db.pragma('locking_mode = EXCLUSIVE')
    this.db.pragma('journal_mode = WAL')
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS digests (digest TEXT PRIMARY KEY, cid TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS images (root TEXT PRIMARY KEY, name TEXT NOT NULL, created TEXT NOT NULL, record TEXT NOT NULL);
      CREATE INDEX IF NOT EXISTS images_name ON images (name);
      CREATE TABLE IF NOT EXISTS tags (name TEXT NOT NULL, tag TEXT NOT NULL, root TEXT NOT NULL, PRIMARY KEY (name, tag));
    `)
    this.pins = new SqlitePinStore({ db: this.db, legacy: components.pins, localBlockstore: components.localBlockstore, onRemove: components.onUnpin })
    this.pinning = { pins: this.pins, localBlockstore: components.localBlockstore }
  }

  /** Opens (creating if needed) `<repo>/index.sqlite`. The repo lock is the node's. */
  static open (repo: string, components: IndexStoreComponents): IndexStore {
    return new IndexStore(join(repo, DEFAULTS.file), components)
  }

  readonly digests = {
    put: (digest: string, cid: CID | string): void => {
      this.putDigests([{ digest, cid: typeof cid === 'string' ? CID.parse(cid) : cid }])
    },
    get: (digest: string): CID | undefined => {
      const row = this.db.prepare('SELECT cid FROM digests WHERE digest = ?').get(digest) as { cid: string } | undefined
      return row == null ? undefined : CID.parse(row.cid)
    },
    delete: (digest: string): boolean => {
      return this.db.prepare('DELETE FROM digests WHERE digest = ?').run(digest).changes > 0
    },
    /** Every CID a digest maps to (the blobs of the images here: layers, configs, manifests). */
    cids: (): CID[] => {
      return (this.db.prepare('SELECT DISTINCT cid FROM digests').all() as Array<{ cid: string }>).map(r => CID.parse(r.cid))
    }
  }

  readonly images = {
    /**
     * Lists an image: checks that every block under `root` is stored locally (IncompleteImageError
     * otherwise), pins it, then records it together with `digests` in one transaction.
     */
    add: async (record: ImageRecord, options: { digests?: DigestMapping[], signal?: AbortSignal } = {}): Promise<void> => {
      const root = CID.parse(record.root)
      const { localBlockstore: bs } = this.components
      // Blocks may still be queued for writing: a listed image must survive a crash right after,
      // and a write that failed (a full disk) is reported as itself, not as a missing block.
      await bs.flush?.()
      let blocks = 0
      for await (const _ of walkDag(root, async (cid) => {
        if (!await bs.has(cid)) throw new IncompleteImageError(record.root, cid.toString())
        return await collectBlock(bs.get(cid))
      }, { signal: options.signal, has: async (cid) => await bs.has(cid), missing: (cid) => new IncompleteImageError(record.root, cid.toString()) })) blocks++
      // every block is local (checked above); a lazy pin (a pull) becomes a complete one
      await pinRoot(this.pinning, root, { checked: true, signal: options.signal })
      const tx = this.db.transaction(() => {
        this.putDigests(options.digests ?? [])
        this.db.prepare('INSERT OR REPLACE INTO images (root, name, created, record) VALUES (?, ?, ?, ?)')
          .run(record.root, record.name, record.created, JSON.stringify(record))
      })
      try {
        tx()
      } catch (err) {
        // SQLite rolled the transaction back: the image is not listed, the file stays readable.
        const errno = spaceErrno(err)
        throw errno != null ? new NoSpaceError(this.path, errno) : err
      }
      this.log.info({ root: record.root, name: record.name, blocks }, 'image listed')
    },
    /**
     * The listed images a reference names: a root CID (also `ipfs://CID`, `/ipfs/CID`), a tag
     * `NAME:TAG`, or the name an image was pushed or imported as (all images of that name).
     */
    find: (ref: string): string[] => {
      const bare = ref.replace(/^ipfs:\/\//, '').replace(/^\/ipfs\//, '')
      if (this.images.get(bare) != null) return [bare]
      const colon = ref.lastIndexOf(':')
      if (colon > 0 && !ref.slice(colon).includes('/')) {
        const root = this.tags.get(ref.slice(0, colon), ref.slice(colon + 1))
        if (root != null) return [root]
      }
      return (this.db.prepare('SELECT root FROM images WHERE name = ? ORDER BY created').all(ref) as Array<{ root: string }>).map(r => r.root)
    },
    list: (): ImageRecord[] => {
      return (this.db.prepare('SELECT record FROM images ORDER BY created, name').all() as Array<{ record: string }>).map(r => this.withTags(JSON.parse(r.record) as ImageRecord))
    },
    get: (root: string): ImageRecord | undefined => {
      const row = this.db.prepare('SELECT record FROM images WHERE root = ?').get(root) as { record: string } | undefined
      return row == null ? undefined : this.withTags(JSON.parse(row.record) as ImageRecord)
    },
    /** Unlists an image, then unpins it (blocks go at the next GC). Returns false when unknown. */
    remove: async (root: string): Promise<boolean> => {
      const cid = CID.parse(root)
      const removed = this.db.transaction(() => {
        this.db.prepare('DELETE FROM tags WHERE root = ?').run(root)
        return this.db.prepare('DELETE FROM images WHERE root = ?').run(root).changes > 0
      })()
      // its digest→CID entries, unless another listed image has the same blob
      const others = new Set<string>()
      for (const img of this.images.list()) for (const b of await this.blobsOf(img.root)) others.add(`${b.digest} ${b.cid}`)
      const del = this.db.prepare('DELETE FROM digests WHERE digest = ? AND cid = ?')
      for (const b of await this.blobsOf(root)) if (!others.has(`${b.digest} ${b.cid}`)) del.run(b.digest, b.cid)
      if (await getPin(this.pinning, cid) != null) await unpinRoot(this.pinning, cid)
      if (removed) this.log.info({ root }, 'image removed')
      return removed
    }
  }

  /**
   * Friendly names of listed images (`NAME:TAG` → root CID), what the mirror's registry API
   * serves as `/v2/NAME/manifests/TAG`. A name is checked by the caller (OCI name and tag rules);
   * a tag names one image, and moving it is one update.
   */
  readonly tags = {
    /** Points `name:tag` at a listed image (ImageNotListedError otherwise). */
    set: (name: string, tag: string, root: string): void => {
      if (this.images.get(root) == null) throw new ImageNotListedError(root)
      try {
        this.db.prepare('INSERT OR REPLACE INTO tags (name, tag, root) VALUES (?, ?, ?)').run(name, tag, root)
      } catch (err) {
        const errno = spaceErrno(err)
        throw errno != null ? new NoSpaceError(this.path, errno) : err
      }
    },
    get: (name: string, tag: string): string | undefined => {
      const row = this.db.prepare('SELECT root FROM tags WHERE name = ? AND tag = ?').get(name, tag) as { root: string } | undefined
      return row?.root
    },
    delete: (name: string, tag: string): boolean => {
      return this.db.prepare('DELETE FROM tags WHERE name = ? AND tag = ?').run(name, tag).changes > 0
    },
    /** Whether any tag has this name (a registry tells an unknown name from an unknown tag). */
    hasName: (name: string): boolean => {
      return this.db.prepare('SELECT 1 FROM tags WHERE name = ? LIMIT 1').get(name) != null
    },
    /** The distinct images the tags of `name` point at. */
    rootsOf: (name: string): string[] => {
      return (this.db.prepare('SELECT DISTINCT root FROM tags WHERE name = ? ORDER BY root').all(name) as Array<{ root: string }>).map(r => r.root)
    },
    list: (): Array<{ name: string, tag: string, root: string }> => {
      return this.db.prepare('SELECT name, tag, root FROM tags ORDER BY name, tag').all() as Array<{ name: string, tag: string, root: string }>
    }
  }

  /**
   * The blobs a published layout links (`blobs/<alg>/<hex>`, plain directories): read from the
   * local blocks only; what is not stored here is left out.
   */
  private async blobsOf (root: string): Promise<Array<{ digest: string, cid: string }>> {
    const bs = this.components.localBlockstore
    const node = async (cid: CID): Promise<dagPb.PBNode | undefined> => {
      if (cid.code !== dagPb.code || !await bs.has(cid)) return undefined
      return dagPb.decode(await collectBlock(bs.get(cid)))
    }
    const out: Array<{ digest: string, cid: string }> = []
    try {
      const blobs = (await node(CID.parse(root)))?.Links.find(l => l.Name === 'blobs')
      if (blobs == null) return out
      for (const alg of (await node(blobs.Hash))?.Links ?? []) {
        for (const blob of (await node(alg.Hash))?.Links ?? []) out.push({ digest: `${alg.Name ?? ''}:${blob.Name ?? ''}`, cid: blob.Hash.toString() })
      }
    } catch {
      // not a layout (a descriptor pinned as an image): no blobs to name
    }
    return out
  }

  private withTags (record: ImageRecord): ImageRecord {
    const tags = (this.db.prepare('SELECT name, tag FROM tags WHERE root = ? ORDER BY name, tag').all(record.root) as Array<{ name: string, tag: string }>).map(t => `${t.name}:${t.tag}`)
    return tags.length > 0 ? { ...record, tags } : record
  }

  private putDigests (mappings: DigestMapping[]): void {
    const stmt = this.db.prepare('INSERT OR REPLACE INTO digests (digest, cid) VALUES (?, ?)')
    for (const m of mappings) {
      if (!/^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(m.digest)) throw new InvalidOptionError(`not an OCI digest: ${JSON.stringify(m.digest)}`)
      stmt.run(m.digest, m.cid.toString())
    }
  }

  close (): void {
    this.db.close()
  }
}
