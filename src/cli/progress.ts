import type { ConvertProgress } from '../convert/index.js'
import { DEFAULTS } from './options.js'

function mb (n: number): string {
  return (n / 1e6).toFixed(1)
}

/**
 * Per-layer progress on a terminal (stderr): converting, bytes read of the source, rate. On a
 * pipe it prints nothing, so scripted output stays clean.
 */
export class LayerProgress {
  private readonly layers = new Map<string, { size: number, bytes: number, start: number, done: boolean, reused?: boolean }>()
  private lines = 0
  private timer?: NodeJS.Timeout
  private readonly enabled: boolean

  constructor (private readonly out: NodeJS.WriteStream = process.stderr) {
    this.enabled = out.isTTY === true
  }

  readonly onProgress = (e: ConvertProgress): void => {
    if (!this.enabled) return
    if (e.type === 'layer:start') this.layers.set(e.digest, { size: e.size, bytes: 0, start: Date.now(), done: false })
    const l = this.layers.get(e.digest)
    if (l == null) return
    if (e.type === 'layer:bytes') l.bytes += e.bytes
    if (e.type === 'layer:done') { l.done = true; l.reused = e.layer.reused }
    this.timer ??= setInterval(() => this.render(), DEFAULTS.progressIntervalMs)
  }

  private render (): void {
    if (this.lines > 0) this.out.write(`\x1b[${this.lines}A`)
    const rows = [...this.layers].map(([digest, l]) => {
      const secs = Math.max(0.001, (Date.now() - l.start) / 1000)
      const state = l.done ? (l.reused === true ? 'kept (already eStargz)' : 'published') : 'converting+publishing'
      return `${digest.slice(7, 19)}  ${state.padEnd(22)} ${mb(l.bytes)}/${mb(l.size)} MB  ${mb(l.bytes / secs)} MB/s`
    })
    for (const r of rows) this.out.write(`\x1b[2K${r}\n`)
    this.lines = rows.length
  }

  stop (): void {
    if (this.timer != null) clearInterval(this.timer)
    if (this.enabled && this.layers.size > 0) this.render()
  }
}
