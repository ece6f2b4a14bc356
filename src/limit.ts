/**
 * Runs at most `limit` of the tasks given to it at once; the others wait in order. A task woken
 * when one ends checks the count again: a caller that came in meanwhile may have taken the slot.
 */
export function limiter (limit: number): <T>(task: () => Promise<T>) => Promise<T> {
  let active = 0
  const waiting: Array<() => void> = []
  return async <T>(task: () => Promise<T>): Promise<T> => {
    while (active >= limit) await new Promise<void>(resolve => { waiting.push(resolve) })
    active++
    try {
      return await task()
    } finally {
      active--
      waiting.shift()?.()
    }
  }
}
