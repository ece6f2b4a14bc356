import { setTimeout as sleep } from 'node:timers/promises'

/**
 * On-demand work of a process (layer mounts and the reads containers wait on), shared by every
 * layer it serves: the background fetch of each layer waits until all of it has been quiet for
 * a while, as the reference's task manager does. Without a shared record, the background fetch
 * of a layer mounted first competes with the next layer's mount and its first reads.
 */
export class Activity {
  private running = 0
  /** When the last piece of work ended; creation counts as work (a mount is starting). */
  private last = Date.now()
  private readonly idleWaiters = new Set<() => void>()

  /** Marks the start of on-demand work; call the returned function once when it ends. */
  begin (): () => void {
    this.running++
    let ended = false
    return () => {
      if (ended) return
      ended = true
      this.running--
      this.last = Date.now()
      if (this.running === 0) {
        for (const wake of this.idleWaiters) wake()
        this.idleWaiters.clear()
      }
    }
  }

  /** Milliseconds since the last on-demand work ended (0 while some runs). */
  quietFor (): number {
    return this.running > 0 ? 0 : Date.now() - this.last
  }

  /** Resolves once no on-demand work has run for `ms`, or when `signal` fires. */
  async whenQuiet (ms: number, signal?: AbortSignal): Promise<void> {
    for (;;) {
      if (signal?.aborted === true) return
      if (this.running > 0) await new Promise<void>(resolve => this.idleWaiters.add(resolve))
      const quiet = this.quietFor()
      if (quiet >= ms) return
      await sleep(ms - quiet, undefined, { signal }).catch(() => {})
    }
  }
}
