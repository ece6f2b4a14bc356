// Node 20 (V8 11.3) lacks Promise.withResolvers, which it-queue, libp2p, helia, yamux, noise and
// pnet call. Every entry point imports this module first; vitest loads it as a setup file.
// Node 22+ has the builtin and this is a no-op there.
declare global {
  interface PromiseConstructor {
    withResolvers<T>(): PromiseWithResolvers<T>
  }
}

if (typeof Promise.withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value: function withResolvers<T> (): PromiseWithResolvers<T> {
      let resolve!: (value: T | PromiseLike<T>) => void
      let reject!: (reason?: unknown) => void
      const promise = new Promise<T>((res, rej) => { resolve = res; reject = rej })
      return { promise, resolve, reject }
    }
  })
}

export {}
