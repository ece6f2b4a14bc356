import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AlreadyExistsError, FailedPreconditionError, NotFoundError, UnavailableError } from '../../src/containerd/errors.js'
import { ContainerdClient } from '../../src/containerd/client.js'
import { containerdNeeds, startContainerd, type PrivateContainerd } from '../../scripts/fixtures/containerd.js'
import { needs } from '../helpers/env.js'
import { sha256 } from '../../scripts/fixtures/digest.js'


async function * chunked (data: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size)
}

describe('ContainerdClient without containerd', () => {
  it('fails with UnavailableError naming the socket', async () => {
    const client = ContainerdClient.create({ address: '/nonexistent/containerd.sock' })
    try {
      const err = await client.content.info(sha256(new Uint8Array(1))).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(UnavailableError)
      expect((err as Error).message).toContain('/nonexistent/containerd.sock')
    } finally {
      client.close()
    }
  })
})

describe.skipIf(needs(containerdNeeds))('ContainerdClient against a private containerd', () => {
  let ctrd: PrivateContainerd

  beforeAll(async () => { ctrd = await startContainerd() })
  afterAll(async () => { await ctrd?.stop() })

  it('writes a blob in chunks and reads back the same bytes, with its labels', async () => {
    const data = randomBytes(3 * (1 << 20) + 12345) // several Write messages
    const digest = sha256(data)
    const res = await ctrd.client.content.write(chunked(data, 700_000), { expected: { digest, size: data.length }, labels: { 'test/label': 'x', 'containerd.io/gc.root': 'test' } }) // unreferenced content is GC'd: pin it
    expect(res).toEqual({ digest, size: data.length, written: data.length, existed: false })
    const info = await ctrd.client.content.info(digest)
    expect(info.size).toBe(data.length)
    expect(info.labels['test/label']).toBe('x')
    expect(Buffer.compare(Buffer.from(await ctrd.client.content.readAll(digest)), data)).toBe(0)
    const part = await ctrd.client.content.readAll(digest, { offset: 100, size: 50 })
    expect(Buffer.compare(Buffer.from(part), data.subarray(100, 150))).toBe(0)
    // a second write of the same blob sends nothing
    const again = await ctrd.client.content.write(data, { expected: { digest, size: data.length } })
    expect(again.existed).toBe(true)
    expect(again.written).toBe(0)
    // labels can be changed afterwards
    await ctrd.client.content.update(digest, { 'test/label': 'y', 'test/other': 'z' })
    expect((await ctrd.client.content.info(digest)).labels).toMatchObject({ 'test/label': 'y', 'test/other': 'z' })
    await ctrd.client.content.delete(digest)
    await expect(ctrd.client.content.info(digest)).rejects.toBeInstanceOf(NotFoundError)
  })

  it('refuses a write whose bytes do not match the expected digest, and leaves no ingest', async () => {
    const data = randomBytes(4096)
    const wrong = sha256(randomBytes(16))
    const ref = 'test-wrong-digest'
    const err = await ctrd.client.content.write(data, { expected: { digest: wrong, size: data.length }, ref }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(FailedPreconditionError)
    expect((err as Error).message).toMatch(/unexpected commit digest/)
    await expect(ctrd.client.content.info(wrong)).rejects.toBeInstanceOf(NotFoundError)
    await expect(ctrd.client.content.info(sha256(data))).rejects.toBeInstanceOf(NotFoundError)
    await expect(ctrd.client.content.status(ref)).rejects.toBeInstanceOf(NotFoundError)
  })

  it('refuses a write with the wrong size', async () => {
    const data = randomBytes(1000)
    const err = await ctrd.client.content.write(data, { expected: { digest: sha256(data), size: 999 } }).catch((e: unknown) => e)
    expect((err as { code?: string }).code).toMatch(/^ERR_CONTAINERD_/)
    await expect(ctrd.client.content.info(sha256(data))).rejects.toBeInstanceOf(NotFoundError)
  })

  it('creates, gets, lists, updates and deletes an image record', async () => {
    const blob = Buffer.from('{"schemaVersion":2}')
    const target = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256(blob), size: blob.length }
    const name = 'test.local/image:one'
    const created = await ctrd.client.images.create({ name, labels: { a: '1' }, target })
    expect(created.target).toEqual(target)
    await expect(ctrd.client.images.create({ name, labels: {}, target })).rejects.toBeInstanceOf(AlreadyExistsError)
    const got = await ctrd.client.images.get(name)
    expect(got).toMatchObject({ name, labels: { a: '1' }, target })
    expect((await ctrd.client.images.list([`name==${name}`])).map(i => i.name)).toEqual([name])
    const other = { ...target, digest: sha256(Buffer.from('other')) }
    await ctrd.client.images.upsert({ name, labels: { a: '2' }, target: other })
    expect((await ctrd.client.images.get(name)).target.digest).toBe(other.digest)
    expect(await ctrd.ctr(['images', 'ls', '-q'])).toContain(name)
    await ctrd.client.images.delete(name, { sync: true })
    const err = await ctrd.client.images.get(name).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(NotFoundError)
    expect((err as Error).message).toContain(name)
  })

  it('keeps content written under a lease until the lease is deleted, then GC removes it', async () => {
    const lease = await ctrd.client.leases.create({ labels: { purpose: 'test' } })
    expect(lease.id).not.toBe('')
    expect((await ctrd.client.leases.list()).map(l => l.id)).toContain(lease.id)
    const data = randomBytes(2048)
    const digest = sha256(data)
    await ctrd.client.withLease(lease.id).content.write(data, { expected: { digest, size: data.length } })
    expect(await ctrd.client.leases.listResources(lease.id)).toContainEqual({ id: digest, type: 'content' })
    // an unrelated deletion triggers GC: the leased blob survives it
    const tmp = randomBytes(10)
    await ctrd.client.content.write(tmp, { expected: { digest: sha256(tmp), size: tmp.length } })
    await ctrd.client.images.create({ name: 'test.local/gc-trigger', labels: {}, target: { mediaType: 'application/octet-stream', digest: sha256(tmp), size: tmp.length } })
    await ctrd.client.images.delete('test.local/gc-trigger', { sync: true })
    expect(await ctrd.client.content.has(digest)).toBe(true)
    await ctrd.client.leases.delete(lease.id, { sync: true })
    expect(await ctrd.client.content.has(digest)).toBe(false)
    await expect(ctrd.client.leases.delete(lease.id)).rejects.toBeInstanceOf(NotFoundError)
  })

  it('lists namespaces and snapshots through containerd', async () => {
    expect((await ctrd.client.namespaces.list()).map(n => n.name)).toContain('default')
    const sn = ctrd.client.snapshots('overlayfs')
    const mounts = await sn.prepare('test-active', '')
    expect(mounts.length).toBeGreaterThan(0)
    expect((await sn.stat('test-active')).kind).toBe('active')
    await sn.commit('test-committed', 'test-active', { 'test/l': 'v' })
    const info = await sn.stat('test-committed')
    expect(info).toMatchObject({ name: 'test-committed', kind: 'committed', labels: { 'test/l': 'v' } })
    const names: string[] = []
    for await (const i of sn.list()) names.push(i.name)
    expect(names).toContain('test-committed')
    await sn.remove('test-committed')
    await expect(sn.stat('test-committed')).rejects.toBeInstanceOf(NotFoundError)
  })
})
