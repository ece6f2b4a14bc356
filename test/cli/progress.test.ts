import { describe, expect, it } from 'vitest'
import { LayerProgress } from '../../src/cli/progress.js'
import { DEFAULTS } from '../../src/cli/options.js'
import type { ConvertedLayer } from '../../src/convert/index.js'

/** A terminal that records what is written, and a clock the test moves. */
function terminal (): { out: { write: (s: string) => void, isTTY: boolean }, text: () => string, clock: { now: number } } {
  let text = ''
  return { out: { write: (s) => { text += s }, isTTY: true }, text: () => text, clock: { now: 1_000_000 } }
}

const DIGEST = 'sha256:' + 'ab'.repeat(32)
const done = { type: 'layer:done', digest: DIGEST, layer: { reused: false } as unknown as ConvertedLayer } as const

describe('LayerProgress (push\'s progress lines)', () => {
  it('draws its last lines once: a second stop() and later events write nothing (they moved the cursor up over the root CID)', () => {
    const t = terminal()
    const p = new LayerProgress(t.out, () => t.clock.now)
    p.onProgress({ type: 'layer:start', digest: DIGEST, size: 10e6 })
    p.onProgress({ type: 'layer:bytes', digest: DIGEST, bytes: 10e6 })
    p.onProgress(done)
    p.stop()
    const afterFirst = t.text()
    expect(afterFirst).toContain('published')
    p.stop()
    p.onProgress({ type: 'layer:start', digest: 'sha256:' + 'cd'.repeat(32), size: 1 })
    expect(t.text()).toBe(afterFirst)
  })

  it('shows the current rate over the last window, falling to 0 when the layer stalls, not the mean since the start', () => {
    const t = terminal()
    const p = new LayerProgress(t.out, () => t.clock.now)
    p.onProgress({ type: 'layer:start', digest: DIGEST, size: 100e6 })
    // 10 s at 5 MB/s, then 10 s at 1 MB/s: the mean is 3 MB/s, the current rate 1 MB/s
    for (let s = 0; s < 20; s++) {
      for (let i = 0; i < 10; i++) {
        t.clock.now += 100
        p.onProgress({ type: 'layer:bytes', digest: DIGEST, bytes: (s < 10 ? 5e6 : 1e6) / 10 })
      }
    }
    expect(p.rows()[0]).toMatch(/ 60\.0\/100\.0 MB {2}1\.0 MB\/s$/)
    // a stall longer than the window: nothing is moving
    t.clock.now += DEFAULTS.progressRateWindowMs + 1
    expect(p.rows()[0]).toMatch(/ 0\.0 MB\/s$/)
    p.stop()
  })

  it('freezes a finished layer\'s figures: its time and mean rate no longer change', () => {
    const t = terminal()
    const p = new LayerProgress(t.out, () => t.clock.now)
    p.onProgress({ type: 'layer:start', digest: DIGEST, size: 8e6 })
    t.clock.now += 2000
    p.onProgress({ type: 'layer:bytes', digest: DIGEST, bytes: 8e6 })
    p.onProgress(done)
    const row = p.rows()[0]
    expect(row).toMatch(/published +8\.0\/8\.0 MB {2}in 2\.0 s \(4\.0 MB\/s\)$/)
    t.clock.now += 60_000
    expect(p.rows()[0]).toBe(row)
    p.stop()
  })

  it('prints nothing when its output is not a terminal', () => {
    let text = ''
    const p = new LayerProgress({ write: (s) => { text += s }, isTTY: false })
    p.onProgress({ type: 'layer:start', digest: DIGEST, size: 1 })
    p.onProgress(done)
    p.stop()
    expect(text).toBe('')
  })
})
