import type { ConvertProgress } from '../convert/index.js'
import { commandContext } from './context.js'
import { DEFAULTS } from './options.js'

function mb (n: number): string {
  return (n / 1e6).toFixed(1)
}

/** Where progress lines go: a terminal, or the terminal of the client a daemon runs the command for. */
export interface ProgressOutput {
  write: (text: string) => void
  isTTY?: boolean
}

interface LayerState {
  size: number
  bytes: number
  start: number
  /** When the layer was done: its figures freeze then. */
  doneAt?: number
  reused?: boolean
  /** (time, bytes so far) samples of the last `progressRateWindowMs`; the first one is the window's baseline. */
  samples: Array<{ t: number, bytes: number }>
}

/**
 * Per-layer progress on a terminal (stderr): converting, bytes read of the source, the current
 * rate (over the last `progressRateWindowMs`, so it falls to 0 when a layer stalls instead of
 * averaging since the start), and for a finished layer its time and mean rate, frozen. On a pipe
 * it prints nothing, so scripted output stays clean. Inside the daemon the lines go to the
 * client's stderr, when that is a terminal.
 *
 * It redraws its own lines by moving the cursor up over them; once stopped it never writes
 * again, so what is printed after it (push's root CID) is never overwritten.
 */
export class LayerProgress {
  private readonly layers = new Map<string, LayerState>()
  private lines = 0
  private timer?: NodeJS.Timeout
  private stopped = false
  private readonly out: ProgressOutput
  private readonly enabled: boolean

  constructor (out?: ProgressOutput, private readonly now: () => number = Date.now) {
    const ctx = commandContext.getStore()
    this.out = out ?? (ctx != null ? { write: ctx.stderr, isTTY: ctx.stderrIsTTY === true } : process.stderr)
    this.enabled = this.out.isTTY === true
  }

  readonly onProgress = (e: ConvertProgress): void => {
    if (!this.enabled || this.stopped) return
    const t = this.now()
    if (e.type === 'layer:start') this.layers.set(e.digest, { size: e.size, bytes: 0, start: t, samples: [{ t, bytes: 0 }] })
    const l = this.layers.get(e.digest)
    if (l == null) return
    if (e.type === 'layer:bytes') {
      l.bytes += e.bytes
      const last = l.samples[l.samples.length - 1]
      // one sample per redraw period is enough for the rate
      if (t - last.t >= DEFAULTS.progressIntervalMs / 2) l.samples.push({ t, bytes: l.bytes })
      else last.bytes = l.bytes
    }
    if (e.type === 'layer:done') { l.doneAt = t; l.reused = e.layer.reused }
    this.timer ??= setInterval(() => this.render(), DEFAULTS.progressIntervalMs)
  }

  /** Bytes per second over the last window (ending now). */
  private rate (l: LayerState, t: number): number {
    const from = t - DEFAULTS.progressRateWindowMs
    while (l.samples.length > 1 && l.samples[1].t <= from) l.samples.shift()
    const base = l.samples[0]
    const secs = Math.max(0.001, (t - base.t) / 1000)
    return (l.bytes - base.bytes) / secs
  }

  /** The lines as they are now (what the next redraw writes). */
  rows (): string[] {
    const t = this.now()
    return [...this.layers].map(([digest, l]) => {
      const head = `${digest.slice(7, 19)}  `
      if (l.doneAt != null) {
        const secs = Math.max(0.001, (l.doneAt - l.start) / 1000)
        const state = l.reused === true ? 'kept (already eStargz)' : 'published'
        return `${head}${state.padEnd(22)} ${mb(l.bytes)}/${mb(l.size)} MB  in ${secs.toFixed(1)} s (${mb(l.bytes / secs)} MB/s)`
      }
      return `${head}${'converting+publishing'.padEnd(22)} ${mb(l.bytes)}/${mb(l.size)} MB  ${mb(this.rate(l, t))} MB/s`
    })
  }

  private render (): void {
    if (this.lines > 0) this.out.write(`\x1b[${this.lines}A`)
    const rows = this.rows()
    this.out.write(rows.map(r => `\x1b[2K${r}\n`).join(''))
    this.lines = rows.length
  }

  /** Draws the final lines once; later calls (and later events) do nothing. */
  stop (): void {
    if (this.stopped) return
    this.stopped = true
    if (this.timer != null) clearInterval(this.timer)
    this.timer = undefined
    if (this.enabled && this.layers.size > 0) this.render()
  }
}
