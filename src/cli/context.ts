import { AsyncLocalStorage } from 'node:async_hooks'
import type { OpenRepo } from '../ipfs/index.js'
import type { WarmLayer } from '../fs/index.js'
import type { DaemonConfig, LayerStats } from '../daemon/index.js'

/**
 * Where a command runs. In a plain CLI process: stdout/stderr and a repo the command opens
 * itself. Inside the daemon (a command forwarded over the control API): the caller's streams and
 * the daemon's own open repo, which the command must not close.
 */
export interface CommandContext {
  stdout: (data: Uint8Array | string) => Promise<void>
  stderr: (text: string) => void
  /** Inside the daemon: the client's stderr is a terminal (progress lines are drawn for it). */
  stderrIsTTY?: boolean
  /** Inside the daemon: the client's stdout is a terminal (listings print a table for it). */
  stdoutIsTTY?: boolean
  /** The daemon's configuration, when the command runs inside the daemon (its defaults are the daemon's). */
  config?: DaemonConfig
  /** The daemon's repo, when the command runs inside the daemon. */
  repo?: OpenRepo
  /** Inside the daemon: fires when the client went away (Ctrl-C, kill -9) or the daemon stops. */
  signal?: AbortSignal
  /**
   * Inside a daemon whose lazy mounts can be prepared ahead: opens these layers (footer and TOC)
   * at once, so each Prepare of the pull finds its layer ready.
   */
  warmLayers?: (layers: WarmLayer[], signal?: AbortSignal) => Promise<void>
  /** Inside the daemon: its mounted layers with their counters (`stats`). */
  layerStats?: (signal: AbortSignal) => Promise<LayerStats[]>
}

export const commandContext = new AsyncLocalStorage<CommandContext>()

/**
 * Aborts `ac` when the command is cancelled: on SIGINT/SIGTERM in a CLI process; inside the
 * daemon, when its client goes away (the daemon's own signals are not the command's to take).
 * Returns the function that stops listening.
 */
export function cancelOn (ac: AbortController): () => void {
  const abort = (): void => ac.abort()
  const ctx = commandContext.getStore()
  if (ctx != null) {
    const signal = ctx.signal
    if (signal == null) return () => {}
    if (signal.aborted) abort()
    else signal.addEventListener('abort', abort, { once: true })
    return () => signal.removeEventListener('abort', abort)
  }
  process.once('SIGINT', abort)
  process.once('SIGTERM', abort)
  return () => {
    process.off('SIGINT', abort)
    process.off('SIGTERM', abort)
  }
}
