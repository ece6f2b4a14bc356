import { describe, expect, it } from 'vitest'
import { WriteBehindQueue } from '../../src/ipfs/write-behind.js'

const settled = async <T>(p: Promise<T>): Promise<boolean> => await Promise.race([p.then(() => true, () => true), new Promise<boolean>(resolve => setTimeout(() => resolve(false), 20))])

describe('WriteBehindQueue', () => {
  it('holds writers back past its byte cap and lets them go as writes settle; drain waits for every write', async () => {
    const q = new WriteBehindQueue(10)
    let finish: () => void = () => {}
    const write = new Promise<void>(resolve => { finish = resolve })
    q.add('a', new Uint8Array(11), write)
    expect(q.has('a')).toBe(true)
    expect(q.get('a')?.bytes.length).toBe(11)
    expect(q.size).toBe(1)
    const room = q.room()
    const drained = q.drain()
    expect(await settled(room)).toBe(false)
    expect(await settled(drained)).toBe(false)
    q.settle('a', 11)
    finish()
    expect(await settled(room)).toBe(true)
    expect(await settled(drained)).toBe(true)
    expect(q.size).toBe(0)
  })

  it('a failed write is thrown once: by a writer that waited for room, else by the next throwFailure', async () => {
    const q = new WriteBehindQueue(0)
    q.add('a', new Uint8Array(1), Promise.resolve())
    const room = q.room()
    q.fail(new Error('disk gone'))
    q.fail(new Error('second'))
    q.settle('a', 1)
    await expect(room).rejects.toThrow('disk gone')
    expect(() => { q.throwFailure() }).not.toThrow()
    q.fail(new Error('later'))
    expect(() => { q.throwFailure() }).toThrow('later')
    expect(() => { q.throwFailure() }).not.toThrow()
  })
})
