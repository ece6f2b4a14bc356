import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { exportCar } from '../../src/ipfs/car.js'
import { importBytes } from '../../src/ipfs/import.js'
import { CarSource } from '../../src/source/car.js'
import { MemStore, random } from '../ipfs/helpers.js'
import { rangeSourceSuite } from './suite.js'

const dirs: string[] = []
afterAll(async () => { for (const d of dirs) await rm(d, { recursive: true, force: true }) })

async function carOf (data: Uint8Array, kuboCompatible = false): Promise<string> {
  const store = new MemStore()
  const { cid } = await importBytes(store, data, { kuboCompatible })
  const dir = await mkdtemp(join(tmpdir(), 'car-source-'))
  dirs.push(dir)
  const path = join(dir, 'blob.car')
  await exportCar(store.getBlock, cid, path)
  return path
}

rangeSourceSuite('CarSource (1 MiB leaves)', async (data) => {
  const source = await CarSource.open(await carOf(data))
  return { source, cleanup: async () => { await source.close() } }
}, { boundaries: [1 << 20, 2 << 20, 3 << 20] })

rangeSourceSuite('CarSource (kubo-compatible 256 KiB leaves)', async (data) => {
  const source = await CarSource.open(await carOf(data, true))
  return { source, cleanup: async () => { await source.close() } }
})

describe('CarSource', () => {
  it('refuses a file that is not a CAR', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'car-source-'))
    dirs.push(dir)
    await writeFile(join(dir, 'x.car'), 'hello, not a car')
    await expect(CarSource.open(join(dir, 'x.car'))).rejects.toMatchObject({ code: 'ERR_INVALID_CAR' })
  })

  it('fails a read whose block was tampered with, and serves other ranges', async () => {
    const data = random(3 << 20)
    const path = await carOf(data)
    const car = await readFile(path)
    // flip a byte near the end: inside the last leaf (depth-first order puts it last)
    car[car.length - 100] ^= 0xff
    await writeFile(path, car)
    const source = await CarSource.open(path)
    try {
      await expect(source.read((3 << 20) - 200, 200)).rejects.toMatchObject({ code: 'ERR_BLOCK_DIGEST_MISMATCH' })
      const ok = await source.read(0, 1000)
      expect(Buffer.compare(Buffer.from(ok), data.subarray(0, 1000))).toBe(0)
    } finally {
      await source.close()
    }
  })
})
