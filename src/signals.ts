import { setMaxListeners } from 'node:events'

/**
 * Abort signals that keep what they follow. `AbortSignal.any` follows its sources without a
 * listener, so Node keeps an `AbortSignal.timeout` among them only weakly (and its timer only a
 * weak reference to it): a garbage collection before the deadline can drop it, and the combined
 * signal never fires from it — the work then waits on the other sources alone (seen: a mirror's
 * 1 s block deadline that waited 60 s, until the client's connection timed out). A timeout signal
 * with an abort listener is kept; these follow their sources with listeners.
 */

/** A signal that fires at a deadline or with its parent, and lets go of both once the work is over. */
export interface Deadline {
  signal: AbortSignal
  /** Whether it fired because the deadline passed (not the parent). */
  readonly expired: boolean
  /** Stops the timer and stops following the parent (call when the work is over). */
  clear: () => void
}

/**
 * A signal that aborts after `ms` (reason: a `TimeoutError` DOMException, as
 * `AbortSignal.timeout` gives) or when `parent` aborts (its reason): what
 * `AbortSignal.any([parent, AbortSignal.timeout(ms)])` means, with the timer holding the
 * controller. Like `AbortSignal.timeout`, the timer does not keep the process alive.
 */
export function deadline (ms: number, parent?: AbortSignal): Deadline {
  const controller = new AbortController()
  let expired = false
  const onParent = (): void => {
    clearTimeout(timer)
    controller.abort(parent?.reason)
  }
  const timer = setTimeout(() => {
    expired = true
    parent?.removeEventListener('abort', onParent)
    controller.abort(new DOMException(`deadline of ${ms} ms passed`, 'TimeoutError'))
  }, ms)
  timer.unref()
  const clear = (): void => {
    clearTimeout(timer)
    parent?.removeEventListener('abort', onParent)
  }
  if (parent?.aborted === true) onParent()
  else if (parent != null) follow(parent, onParent)
  return { signal: controller.signal, get expired () { return expired }, clear }
}

/** A signal that aborts with the first of `sources` that does (its reason); `clear` stops following them. */
export function anyOf (sources: readonly AbortSignal[]): { signal: AbortSignal, clear: () => void } {
  const controller = new AbortController()
  const clear = (): void => {
    for (const s of sources) s.removeEventListener('abort', onAbort)
  }
  function onAbort (this: AbortSignal): void {
    clear()
    controller.abort(this.reason)
  }
  const first = sources.find(s => s.aborted)
  if (first != null) controller.abort(first.reason)
  else for (const s of sources) follow(s, onAbort)
  return { signal: controller.signal, clear }
}

/**
 * Listens for `signal`'s abort. Many deadlines following one long-lived signal at once (the
 * reads of one request, of one mount) are the normal case, not a leak (each is removed when its
 * work is over), so Node's listener-count warning is lifted for it.
 */
function follow (signal: AbortSignal, listener: (this: AbortSignal) => void): void {
  setMaxListeners(Infinity, signal)
  signal.addEventListener('abort', listener, { once: true })
}
