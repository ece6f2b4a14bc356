import { describe, expect, it } from 'vitest'
import { InvalidOptionError } from '../src/errors.js'
import { OpenLru } from '../src/open-lru.js'

/** Resources that say whether they were closed, opened by a function that counts its calls. */
function resources (): { opened: string[], closed: string[], open: (key: string) => () => Promise<string>, lru: (max: number) => OpenLru<string> } {
  const opened: string[] = []
  const closed: string[] = []
  return {
    opened,
    closed,
    open: (key) => async () => { opened.push(key); return key },
    lru: (max) => new OpenLru<string>({ max, close: async (v) => { closed.push(v) } })
  }
}

const settle = async (): Promise<void> => await new Promise(resolve => setImmediate(resolve))

describe('OpenLru', () => {
  it('opens a key once, shared by callers that ask while it opens; closes the least recently used beyond max', async () => {
    const r = resources()
    const lru = r.lru(2)
    expect(await Promise.all([lru.get('a', r.open('a')), lru.get('a', r.open('a'))])).toEqual(['a', 'a'])
    await lru.get('b', r.open('b'))
    await lru.get('a', r.open('a')) // a is now the most recently used
    await lru.get('c', r.open('c')) // evicts b
    await settle()
    expect(r.opened).toEqual(['a', 'b', 'c'])
    expect(r.closed).toEqual(['b'])
    await lru.get('b', r.open('b')) // opened anew, evicts a
    await settle()
    expect(r.opened).toEqual(['a', 'b', 'c', 'b'])
    expect(r.closed).toEqual(['b', 'a'])
  })

  it('does not keep a failed open: the next caller opens again', async () => {
    const lru = new OpenLru<string>({ max: 4, close: async () => {} })
    let calls = 0
    const flaky = async (): Promise<string> => { if (++calls === 1) throw new Error('not yet'); return 'ok' }
    await expect(lru.get('k', flaky)).rejects.toThrow('not yet')
    expect(await lru.get('k', flaky)).toBe('ok')
    expect(calls).toBe(2)
  })

  it('closes a resource evicted while it was still opening once its open finishes', async () => {
    const closed: string[] = []
    const lru = new OpenLru<string>({ max: 1, close: async (v) => { closed.push(v) } })
    let finish: (v: string) => void = () => {}
    const slow = lru.get('slow', async () => await new Promise<string>(resolve => { finish = resolve }))
    await lru.get('fast', async () => 'fast') // evicts slow, still opening
    await settle()
    expect(closed).toEqual([])
    finish('slow')
    expect(await slow).toBe('slow') // its caller still gets it
    await settle()
    expect(closed).toEqual(['slow'])
  })

  it('delete closes one; clear closes all and waits for the closes; a failing close is reported', async () => {
    const closed: string[] = []
    const failures: unknown[] = []
    const lru = new OpenLru<string>({
      max: 4,
      close: async (v) => {
        await new Promise(resolve => setTimeout(resolve, 20))
        if (v === 'bad') throw new Error('close failed')
        closed.push(v)
      },
      onCloseError: (err) => failures.push(err)
    })
    for (const k of ['a', 'b', 'bad']) await lru.get(k, async () => k)
    lru.delete('a')
    await lru.clear()
    expect(closed.sort()).toEqual(['a', 'b'])
    expect(failures).toMatchObject([{ message: 'close failed' }])
    await lru.clear() // nothing left: closes nothing twice
    expect(closed.sort()).toEqual(['a', 'b'])
  })

  it('refuses a cap below 1', () => {
    for (const max of [0, -1, 1.5, Number.NaN]) expect(() => new OpenLru<string>({ max, close: async () => {} })).toThrow(InvalidOptionError)
  })
})
