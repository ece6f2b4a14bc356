/**
 * The CIDs we produce, pinned: the member-aligned and plain layouts of a blob (both leaf sizes
 * and link counts, one and two levels of interior nodes) and the OCI layout directory over
 * them. A CID that changes makes every image pushed before the change a different image: any
 * change to the importer, its options or the directory code must leave these strings as they are.
 * The input is generated (no gzip, no clock), so only our code decides the CIDs.
 */
import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import type { BlobSegment } from '../../src/estargz/index.js'
import { publishLayout } from '../../src/ipfs/directory.js'
import { importBytes, importSegments, importStream } from '../../src/ipfs/import.js'
import { MemStore, streamOf } from './helpers.js'

const MiB = 1 << 20

/** `n` bytes that depend only on `seed`: SHA-256 in counter mode. */
function bytesOf (seed: string, n: number): Buffer {
  const out = Buffer.allocUnsafe(n)
  for (let i = 0, at = 0; at < n; i++, at += 32) createHash('sha256').update(`${seed}/${i}`).digest().copy(out, at, 0, Math.min(32, n - at))
  return out
}

/** Members of a blob as the eStargz writer hands them over: a few small, one over 1 MiB, many tiny. */
function members (): Buffer[] {
  return [
    bytesOf('header', 10),
    bytesOf('big', MiB + MiB / 2),
    bytesOf('small', 4096),
    ...Array.from({ length: 1100 }, (_, i) => bytesOf(`tiny-${i}`, 7 + (i % 13))),
    bytesOf('toc', 900),
    bytesOf('footer', 51)
  ]
}

async function importMembers (store: MemStore, kuboCompatible: boolean): Promise<string> {
  const r = await importSegments(store, async (sink) => {
    let offset = 0
    for (const bytes of members()) {
      await sink({ kind: 'data', offset, bytes } satisfies BlobSegment)
      offset += bytes.length
    }
  }, { kuboCompatible, smallMemberLeafBytes: 0 }) // one leaf per member: 1100+ leaves
  return r.cid.toString()
}

describe('CID pins', () => {
  it('member-aligned import (1100+ leaves: two levels)', async () => {
    expect(await importMembers(new MemStore(), false)).toBe('bafybeigioel5afr2xnpacbfikkpfwulmbmv2k7qs3wsks6hmrrzakyfw5y')
  })

  it('member-aligned bytes in kubo-compatible mode', async () => {
    expect(await importMembers(new MemStore(), true)).toBe('bafybeihyvtjfstkwrcjljj3f6d4bm3ubm64mickamjr5mirzc3rtkfg7je')
  })

  it('plain import: one raw leaf, 1 MiB leaves, kubo-compatible 256 KiB leaves', async () => {
    const store = new MemStore()
    expect((await importBytes(store, bytesOf('config', 700))).cid.toString()).toBe('bafkreidvjepcqva7kup2mn7qygrcny423bmbaukogakdgatsqdj6qslgu4')
    expect((await importStream(store, streamOf(bytesOf('layer', 3 * MiB + 5)))).cid.toString()).toBe('bafybeihvrvv6n3k5hrndapb4yvzrwqqh5pv3ylpcjq5anj4wz2q3fqzmqy')
    expect((await importStream(store, streamOf(bytesOf('layer', 3 * MiB + 5)), { kuboCompatible: true })).cid.toString()).toBe('bafybeic2fmggmldt4glw45cvdiaerussm4cwtnoye5venrpweojf7i4yvu')
  })

  it('the OCI layout directory over imported blobs', async () => {
    const store = new MemStore()
    const layer = await importStream(store, streamOf(bytesOf('layer', 3 * MiB + 5)))
    const config = await importBytes(store, bytesOf('config', 700))
    const manifest = await importBytes(store, bytesOf('manifest', 500))
    const digest = (seed: string): string => `sha256:${createHash('sha256').update(seed).digest('hex')}`
    const { cid } = await publishLayout(store, store.getBlock, {
      ociLayout: Buffer.from('{"imageLayoutVersion":"1.0.0"}'),
      index: bytesOf('index', 300),
      blobs: [
        { digest: digest('layer'), cid: layer.cid },
        { digest: digest('config'), cid: config.cid },
        { digest: digest('manifest'), cid: manifest.cid },
        { digest: `sha512:${createHash('sha512').update('other').digest('hex')}`, cid: config.cid }
      ]
    })
    expect(cid.toString()).toBe('bafybeihv5a2h2hyqtwc7wt72lvuybvj6lqcea5ned6sxvctp7tuflsis6q')
  })
})
