/**
 * The shared ImageReader test suite (src/oci/image-reader.ts): every implementation runs it.
 *
 *   import { imageReaderSuite } from '../oci/image-reader-suite.js'
 *   imageReaderSuite('OCI layout dir', async (image) => {
 *     // store `image` wherever the reader reads from
 *     return { open: async () => await openOciLayout(dir), openTampered, notFoundCode, cleanup }
 *   })
 *
 * The suite makes the image (`makeImage`: two layers with a 1 MiB incompressible file each, plain
 * tar layers with `{ docker: true }`) and calls `makeFixture(image)` once (beforeAll); `cleanup`
 * runs in afterAll. Every test opens its own reader and closes it.
 *
 * It checks: root leads to the image (its manifest names the image's config and layers); every
 * blob streams and reads whole with the same bytes; fetchBytes refuses a blob over `maxBytes`
 * (and over the 16 MiB default) before fetching it; a descriptor whose size is off by one fails
 * with SizeMismatchError, and stored bytes that do not hash to the digest fail with
 * DigestMismatchError naming the blob, in both cases without the stream ever completing; an
 * unknown blob fails with the implementation's typed error; an aborted signal rejects with an
 * AbortError; close releases the files the reader read (no descriptor left open) and may be
 * called twice.
 */
import { open, readdir, readFile, readlink } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BlobTooLargeError, DigestMismatchError, SizeMismatchError } from '../../src/oci/errors.js'
import type { ImageReader } from '../../src/oci/image-reader.js'
import type { Descriptor, Manifest } from '../../src/oci/types.js'
import { sha256 } from '../../scripts/fixtures/digest.js'
import { makeImage, type TestImage } from '../../scripts/fixtures/oci-image.js'

export interface ImageReaderFixture {
  /** Opens a new reader on the image. */
  open: () => Promise<ImageReader>
  /**
   * Opens a reader on which `desc` (a blob of the image, at least 1 MiB) is stored with other
   * bytes of the same length.
   */
  openTampered: () => Promise<{ reader: ImageReader, desc: Descriptor }>
  /** The `code` of the error fetching a blob the reader does not have. */
  notFoundCode: string
  /** The root descriptor exactly, when the reader does not synthesize its own (docker-archive does). */
  root?: Descriptor
  /** Files or directories the reader reads: none may be open once it is closed. */
  files?: string[]
  cleanup: () => Promise<void>
}

export interface ImageReaderSuiteOptions {
  /** Plain tar layers and Docker media types (what docker-archive holds). */
  docker?: boolean
  /**
   * Tests (by name) this implementation is known to fail, because of a bug in src/ that is
   * reported and not fixed yet: they run as `it.fails`, so the fix shows up as a failure here
   * and the entry is removed with it.
   */
  knownFailures?: Partial<Record<keyof typeof SUITE_TESTS, string>>
  /** `needs(...)` of the implementation's prerequisites. */
  skip?: boolean
}

type Outcome = { completed: true, bytes: Buffer } | { completed: false, bytes: Buffer, error: unknown }

/** Consumes a fetch the way a pull does, and says whether it completed or how it failed. */
async function drain (fetching: () => Promise<AsyncIterable<Uint8Array>>): Promise<Outcome> {
  const parts: Uint8Array[] = []
  try {
    for await (const chunk of await fetching()) parts.push(chunk)
  } catch (error) {
    return { completed: false, bytes: Buffer.concat(parts), error }
  }
  return { completed: true, bytes: Buffer.concat(parts) }
}

/** A copy of `bytes` with the middle byte changed: same size, another digest. */
export function flipped (bytes: Uint8Array): Buffer {
  const out = Buffer.from(bytes)
  out[out.length >> 1] ^= 0xff
  return out
}

/** Changes the middle byte of `bytes` where they are stored in `file` (in place: same size). */
export async function tamperInPlace (file: string, bytes: Uint8Array): Promise<void> {
  const at = (await readFile(file)).indexOf(bytes)
  if (at < 0) throw new Error(`the bytes to tamper with are not in ${file}`)
  const fh = await open(file, 'r+')
  try {
    const pos = at + (bytes.length >> 1)
    await fh.write(Buffer.from([bytes[bytes.length >> 1] ^ 0xff]), 0, 1, pos)
  } finally {
    await fh.close()
  }
}

/** Paths this process holds open under any of `roots`. */
async function openUnder (roots: string[]): Promise<string[]> {
  const out: string[] = []
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '')
    if (roots.some(r => target === r || target.startsWith(`${r}/`))) out.push(target)
  }
  return out
}

export const SUITE_TESTS = {
  root: 'root leads to the image: its manifest names the image\'s config and layers',
  fetch: 'fetch streams every blob with the stored bytes; fetchBytes returns the same',
  cap: 'fetchBytes refuses a blob over maxBytes, and over the default cap, before fetching it',
  size: 'a descriptor whose size is off by one fails with SizeMismatchError and never completes',
  digest: 'bytes that do not hash to the digest fail with DigestMismatchError naming the blob, and never complete',
  notFound: 'an unknown blob fails with the typed not-found error',
  abort: 'an aborted signal rejects the fetch with an AbortError',
  close: 'close releases the files it read (a stream abandoned half way too), and may be called twice'
} as const

export function imageReaderSuite (name: string, makeFixture: (image: TestImage) => Promise<ImageReaderFixture>, options: ImageReaderSuiteOptions = {}): void {
  describe.skipIf(options.skip === true)(`ImageReader suite: ${name}`, () => {
    const image = makeImage({ seed: `suite ${name}`, layerSize: 1 << 20, noise: true, docker: options.docker })
    const blobs = [image.config, ...image.layers]
    const layer = image.layers[1]
    let fixture: ImageReaderFixture | undefined
    const fx = (): ImageReaderFixture => {
      if (fixture == null) throw new Error('makeFixture failed')
      return fixture
    }
    /** Runs `fn` on a new reader and closes it. */
    const withReader = async <T>(fn: (s: ImageReader) => Promise<T>): Promise<T> => {
      const s = await fx().open()
      try {
        return await fn(s)
      } finally {
        await s.close()
      }
    }
    const test = (key: keyof typeof SUITE_TESTS, fn: () => Promise<void>): void => {
      const title = SUITE_TESTS[key]
      const why = options.knownFailures?.[key]
      if (why != null) it.fails(`${title} [known failure: ${why}]`, fn)
      else it(title, fn)
    }

    beforeAll(async () => { fixture = await makeFixture(image) })
    afterAll(async () => { await fixture?.cleanup() })

    test('root', async () => {
      await withReader(async (s) => {
        expect(s.name).not.toBe('')
        const root = await s.root()
        if (fx().root != null) expect(root).toMatchObject(fx().root as Descriptor)
        const bytes = Buffer.from(await s.fetchBytes(root))
        expect({ digest: sha256(bytes), size: bytes.length }).toEqual({ digest: root.digest, size: root.size })
        const manifest = JSON.parse(bytes.toString()) as Manifest
        expect(manifest.config.digest).toBe(image.config.descriptor.digest)
        expect(manifest.layers.map(l => [l.digest, l.size])).toEqual(image.layers.map(l => [l.descriptor.digest, l.descriptor.size]))
      })
    })

    test('fetch', async () => {
      await withReader(async (s) => {
        for (const b of blobs) {
          const got = await drain(async () => await s.fetch(b.descriptor))
          expect(got.completed, b.descriptor.digest).toBe(true)
          expect(got.bytes.equals(b.bytes), b.descriptor.digest).toBe(true)
          expect(Buffer.from(await s.fetchBytes(b.descriptor)).equals(b.bytes), b.descriptor.digest).toBe(true)
        }
      })
    })

    test('cap', async () => {
      await withReader(async (s) => {
        const d = layer.descriptor
        expect(Buffer.from(await s.fetchBytes(d, { maxBytes: d.size })).equals(layer.bytes)).toBe(true)
        await expect(s.fetchBytes(d, { maxBytes: d.size - 1 })).rejects.toBeInstanceOf(BlobTooLargeError)
        // a blob it does not have: refused for its size, not looked up
        const huge = { mediaType: d.mediaType, digest: sha256('not stored anywhere'), size: (16 << 20) + 1 }
        await expect(s.fetchBytes(huge)).rejects.toBeInstanceOf(BlobTooLargeError)
      })
    })

    test('size', async () => {
      await withReader(async (s) => {
        for (const size of [layer.descriptor.size - 1, layer.descriptor.size + 1]) {
          const got = await drain(async () => await s.fetch({ ...layer.descriptor, size }))
          expect(got.completed, `size ${size}`).toBe(false)
          if (!got.completed) expect(got.error, `size ${size}`).toBeInstanceOf(SizeMismatchError)
          await expect(s.fetchBytes({ ...layer.descriptor, size }), `size ${size}`).rejects.toBeInstanceOf(SizeMismatchError)
        }
      })
    })

    test('digest', async () => {
      const { reader, desc } = await fx().openTampered()
      try {
        const got = await drain(async () => await reader.fetch(desc))
        expect(got.completed).toBe(false)
        if (got.completed) return
        expect(got.error).toBeInstanceOf(DigestMismatchError)
        expect(got.error).toMatchObject({ code: 'ERR_DIGEST_MISMATCH', blob: desc.digest })
        expect((got.error as Error).message).toContain(desc.digest)
        await expect(reader.fetchBytes(desc)).rejects.toBeInstanceOf(DigestMismatchError)
      } finally {
        await reader.close()
      }
    })

    test('notFound', async () => {
      await withReader(async (s) => {
        const missing = { mediaType: layer.descriptor.mediaType, digest: sha256('not stored anywhere'), size: 19 }
        const got = await drain(async () => await s.fetch(missing))
        expect(got.completed).toBe(false)
        if (!got.completed) expect(got.error).toMatchObject({ code: fx().notFoundCode })
      })
    })

    test('abort', async () => {
      await withReader(async (s) => {
        const ac = new AbortController()
        ac.abort()
        const got = await drain(async () => await s.fetch(layer.descriptor, ac.signal))
        expect(got.completed).toBe(false)
        if (!got.completed) expect(got.error).toMatchObject({ name: 'AbortError' })
        // the reader still serves others
        expect(Buffer.from(await s.fetchBytes(layer.descriptor)).equals(layer.bytes)).toBe(true)
      })
    })

    test('close', async () => {
      const s = await fx().open()
      // one stream abandoned after its first chunk, one read to the end
      for await (const _ of await s.fetch(layer.descriptor)) break
      expect(Buffer.from(await s.fetchBytes(image.layers[0].descriptor)).equals(image.layers[0].bytes)).toBe(true)
      await s.close()
      await new Promise(resolve => setTimeout(resolve, 50)) // file handles close asynchronously
      expect(await openUnder(fx().files ?? [])).toEqual([])
      await s.close()
    })
  })
}
