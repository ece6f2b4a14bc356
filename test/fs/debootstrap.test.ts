import { readFile } from 'node:fs/promises'
import { createReadStream, createWriteStream } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { createGunzip } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildEstargzFile } from '../../src/estargz/index.js'
import { FuseMount } from '../../src/fs/fuse.js'
import { LayerFs } from '../../src/fs/layer.js'
import { silentLogger } from '../../src/logging.js'
import { FileSource } from '../../src/source/file.js'
import { hasCommand, hasFuse, needs } from '../helpers/env.js'
import { debianImageNeeds, debianPythonImage } from '../../scripts/fixtures/debian-image.js'
import { diffTrees, hardlinkGroups } from '../helpers/tree.js'
import { extractTar, impliedDirs, overlayForm, removeDir, tempDir, walk } from './helpers.js'

const logger = silentLogger()

/** The real image: every layer of the Debian + python3 image, mounted, equals `tar -x` of it. */
describe.skipIf(needs({ ...debianImageNeeds, fuse: hasFuse, fusermount: hasCommand('fusermount') }))('FUSE mount of the debootstrap image layers', () => {
  let dir: string
  let layers: string[]
  const live: Array<{ mount: FuseMount, fs: LayerFs, file: FileSource }> = []

  beforeAll(async () => {
    const image = await debianPythonImage()
    dir = await tempDir('fuse-debian')
    const index = JSON.parse(await readFile(join(image.layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> }
    const blob = (d: string): string => join(image.layout, 'blobs', 'sha256', d.slice(7))
    const manifest = JSON.parse(await readFile(blob(index.manifests[0].digest), 'utf8')) as { layers: Array<{ digest: string }> }
    layers = []
    for (const [i, l] of manifest.layers.entries()) {
      const tar = join(dir, `layer${i}.tar`)
      await pipeline(createReadStream(blob(l.digest)), createGunzip(), createWriteStream(tar))
      layers.push(tar)
    }
  }, 600_000)

  afterAll(async () => {
    for (const { mount, fs, file } of live) {
      await mount.unmount().catch(() => {})
      await fs.stop().catch(() => {})
      await file.close()
    }
    await removeDir(dir)
  })

  it('every layer mounted through FUSE equals tar -x of it: paths, types, modes, owners, sizes, mtimes, links, xattrs, hardlinks, contents', async () => {
    expect(layers.length).toBe(2)
    for (const [i, tar] of layers.entries()) {
      const esgz = join(dir, `layer${i}.esgz`)
      const { tocDigest } = await buildEstargzFile(tar, esgz)
      const file = await FileSource.open(esgz)
      const fs = await LayerFs.open({ source: file, logger }, { tocDigest, backgroundFetch: false })
      await fs.start()
      const mnt = join(dir, `mnt${i}`)
      const mount = new FuseMount({ fs, logger }, mnt)
      await mount.mount()
      live.push({ mount, fs, file })
      const x = join(dir, `x${i}`)
      await mkdir(x)
      const extractedAt = Math.floor(Date.now() / 1000) - 5
      await extractTar(tar, x)
      const expected = overlayForm(await walk(x))
      for (const d of await impliedDirs(tar)) {
        const e = expected.get(d)
        if (e != null) e.mtime = 0 // tar -x invents the time of a directory the tar does not list
      }
      const actual = await walk(mnt)
      // GNU tar fails to restore the mtime of some directories it writes into later (it then
      // carries the extraction time); the mount shows the header's time, which is right.
      for (const [p, e] of expected) {
        if (e.type === 'dir' && e.mtime >= extractedAt && actual.get(p)?.type === 'dir') e.mtime = actual.get(p)?.mtime ?? e.mtime
      }
      expect(actual.size, `layer ${i}`).toBeGreaterThan(i === 0 ? 5000 : 500)
      expect(diffTrees(actual, expected, { skip: [''] }), `layer ${i}`).toEqual([])
      expect(hardlinkGroups(actual), `layer ${i}`).toEqual(hardlinkGroups(expected))
    }
  }, 900_000)
})
