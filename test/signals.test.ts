import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { describe, expect, it } from 'vitest'
import { anyOf, deadline } from '../src/signals.js'

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

const abortOf = async (signal: AbortSignal): Promise<unknown> => await new Promise(resolve => { signal.addEventListener('abort', () => { resolve(signal.reason) }, { once: true }) })

describe('deadline', () => {
  it('fires after its time with a TimeoutError, and says it expired', async () => {
    const parent = new AbortController()
    const d = deadline(30, parent.signal)
    const started = Date.now()
    const reason = await abortOf(d.signal)
    expect(Date.now() - started).toBeGreaterThanOrEqual(25)
    expect(reason).toMatchObject({ name: 'TimeoutError' })
    expect(d.expired).toBe(true)
    expect(parent.signal.aborted).toBe(false)
  })

  it('follows its parent, with the parent\'s reason, before the deadline; an aborted parent at once', async () => {
    const parent = new AbortController()
    const d = deadline(10_000, parent.signal)
    const why = new Error('caller went away')
    parent.abort(why)
    expect(d.signal.aborted).toBe(true)
    expect(d.signal.reason).toBe(why)
    expect(d.expired).toBe(false)
    const late = deadline(10_000, parent.signal)
    expect(late.signal.aborted).toBe(true)
    expect(late.signal.reason).toBe(why)
  })

  it('cleared, neither the deadline nor the parent aborts it', async () => {
    const parent = new AbortController()
    const d = deadline(20, parent.signal)
    d.clear()
    await new Promise(resolve => setTimeout(resolve, 60))
    parent.abort()
    expect(d.signal.aborted).toBe(false)
  })

  it('fires even when nothing but a listener holds its signal and the heap is collected meanwhile', async () => {
    const parent = new AbortController() // a long-lived parent (a request, a daemon's stop signal)
    const fired = Array.from({ length: 20 }, () => abortOf(deadline(50, parent.signal).signal))
    for (let i = 0; i < 5; i++) {
      gc()
      await new Promise(resolve => setTimeout(resolve, 5))
    }
    const reasons = await Promise.race([Promise.all(fired), new Promise(resolve => setTimeout(() => { resolve('stuck') }, 2_000))])
    expect(reasons).not.toBe('stuck')
    for (const r of reasons as unknown[]) expect(r).toMatchObject({ name: 'TimeoutError' })
  })
})

describe('anyOf', () => {
  it('aborts with the first source that does, with its reason; at once when one already has', () => {
    const a = new AbortController()
    const b = new AbortController()
    const either = anyOf([a.signal, b.signal])
    b.abort('b first')
    a.abort('a later')
    expect(either.signal.reason).toBe('b first')
    expect(anyOf([new AbortController().signal, a.signal]).signal.reason).toBe('a later')
  })

  it('cleared, it follows no source', () => {
    const a = new AbortController()
    const either = anyOf([a.signal])
    either.clear()
    a.abort()
    expect(either.signal.aborted).toBe(false)
  })

  it('keeps an AbortSignal.timeout source across a collection of the heap', async () => {
    const parent = new AbortController()
    const fired = Array.from({ length: 20 }, () => abortOf(anyOf([parent.signal, AbortSignal.timeout(50)]).signal))
    for (let i = 0; i < 5; i++) {
      gc()
      await new Promise(resolve => setTimeout(resolve, 5))
    }
    const reasons = await Promise.race([Promise.all(fired), new Promise(resolve => setTimeout(() => { resolve('stuck') }, 2_000))])
    expect(reasons).not.toBe('stuck')
  })
})
