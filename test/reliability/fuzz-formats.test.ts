/**
 * Fuzzing the OCI JSON documents (index, manifest, config), image references and platforms, and
 * CAR bundles: generated and mutated input is parsed or refused with our typed errors, never a
 * crash or hang; a CAR block is handed out only when it matches its CID.
 */
import { createHash } from 'node:crypto'
import { CarWriter } from '@ipld/car/writer'
import fc from 'fast-check'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { beforeAll, describe, expect, it } from 'vitest'
import { checkBlock, readCar } from '../../src/bundle/index.js'
import { MediaType, parseConfig, parseImageReference, parseIndex, parseManifest, parsePlatform } from '../../src/oci/index.js'
import { makeImage, makeMultiPlatform } from '../../scripts/fixtures/oci-image.js'
import { bytesLike, fuzzTarget, mutationOf, piecesOf, preview, record } from './harness.js'

const json = (v: unknown): Uint8Array => Buffer.from(JSON.stringify(v))

describe('fuzz: OCI documents', () => {
  const image = makeImage({ layerCount: 3 })
  const docker = makeImage({ docker: true })
  const index = makeMultiPlatform()
  const manifests = [image.manifest.bytes, docker.manifest.bytes]
  const configs = [image.config.bytes, docker.config.bytes]
  const indexes = [index.index.bytes]

  /** JSON values with the documents' own keys, so generated input gets past the first checks. */
  const keyed = fc.letrec(tie => ({
    value: fc.oneof({ depthSize: 'small' }, fc.jsonValue({ maxDepth: 2 }), tie('object'), fc.array(tie('value'), { maxLength: 4 })),
    object: fc.dictionary(
      fc.constantFrom('schemaVersion', 'mediaType', 'config', 'layers', 'manifests', 'digest', 'size', 'annotations', 'platform', 'os', 'architecture', 'variant', 'rootfs', 'type', 'diff_ids', 'history', 'urls', 'subject', 'artifactType'),
      tie('value'), { maxKeys: 8 })
  })).object

  const mediaType = fc.option(fc.constantFrom(MediaType.OciManifest, MediaType.OciIndex, MediaType.DockerManifest, MediaType.DockerManifestList, 'text/plain', ''), { nil: undefined })

  it('manifests: a Manifest or a typed error', async () => {
    await fuzzTarget('OCI manifest JSON', fc.tuple(fc.oneof(bytesLike(manifests), keyed.map(json)), mediaType),
      ([b, mt]) => parseManifest(b, 'sha256:fuzz', mt), { reduced: 300, full: 10_000, show: ([b, mt]: [Uint8Array, string]) => `${Buffer.from(b).toString('latin1').slice(0, 400)} as ${mt}` })
  })

  it('indexes: an Index or a typed error', async () => {
    await fuzzTarget('OCI index JSON', fc.tuple(fc.oneof(bytesLike(indexes), keyed.map(json)), mediaType),
      ([b, mt]) => parseIndex(b, 'sha256:fuzz', mt), { reduced: 300, full: 10_000, show: ([b, mt]: [Uint8Array, string]) => `${Buffer.from(b).toString('latin1').slice(0, 400)} as ${mt}` })
  })

  it('configs: an ImageConfig or a typed error', async () => {
    await fuzzTarget('OCI config JSON', fc.oneof(bytesLike(configs), keyed.map(json)),
      (b) => parseConfig(b, 'sha256:fuzz'), { reduced: 300, full: 10_000, show: (b: Uint8Array) => Buffer.from(b).toString('latin1').slice(0, 400) })
  })

  it('image references and platforms (user input): parsed or a typed error', async () => {
    const ref = fc.oneof(
      fc.string({ maxLength: 300 }),
      fc.constantFrom('docker.io/library/alpine:3', 'oci:/tmp/x:tag', 'oci-archive:/a.tar', 'docker-archive:/a.tar:x', 'ipfs://bafy', 'localhost:5000/a@sha256:' + 'a'.repeat(64), 'a'.repeat(300)).chain(s => mutationOf(Buffer.from(s)).map(b => Buffer.from(b).toString('latin1')))
    )
    await fuzzTarget('image reference', ref, (s) => parseImageReference(s), { reduced: 300, full: 10_000 })
    await fuzzTarget('platform', fc.oneof(fc.string({ maxLength: 60 }), fc.constantFrom('linux/amd64', 'linux/arm64/v8', 'windows/amd64/10.0.1')), (s) => parsePlatform(s), { reduced: 200, full: 5_000 })
  })
})

describe('fuzz: CAR bundles', () => {
  let car: Uint8Array
  const blocks = new Map<string, Uint8Array>()

  beforeAll(async () => {
    const items = await Promise.all([1, 2, 3, 4].map(async (i) => {
      const bytes = Buffer.from(`block ${i} `.repeat(i * 40))
      const cid = CID.createV1(raw.code, await sha256.digest(bytes))
      return { cid, bytes }
    }))
    const { writer, out } = CarWriter.create([items[0].cid])
    const parts: Uint8Array[] = []
    const collect = (async () => { for await (const p of out) parts.push(p) })()
    for (const b of items) await writer.put(b)
    await writer.close()
    await collect
    car = Buffer.concat(parts)
    for (const b of items) blocks.set(b.cid.toString(), b.bytes)
  })

  it('readCar over mutated bundles, in pieces: blocks that match their CIDs, or a typed error', async () => {
    let checked = 0
    let wrong = 0
    const arb = fc.tuple(bytesLike([car]), fc.array(fc.integer({ min: 1, max: 700 }), { maxLength: 4 }))
    await fuzzTarget('CAR bundle', arb, async ([b, sizes]) => {
      const { blocks: it } = await readCar(piecesOf(b, sizes), { limits: { maxBlockBytes: 64 << 10 } })
      for await (const block of it) {
        // what readCar hands out must hash to its CID
        const digest = createHash('sha256').update(block.bytes).digest()
        checked += block.bytes.length
        if (block.cid.multihash.code === sha256.code && !Buffer.from(block.cid.multihash.digest).equals(digest)) wrong++
      }
    }, { reduced: 300, full: 10_000, show: ([b]: [Uint8Array, number[]]) => preview(b) })
    record({ kind: 'wrong-bytes', what: 'CAR reader, mutated bundles', bytesChecked: checked, wrong })
    expect(wrong).toBe(0)
    expect(() => { checkBlock(CID.parse([...blocks.keys()][0]), Buffer.from('x'), 0) }).toThrow()
  })
})
