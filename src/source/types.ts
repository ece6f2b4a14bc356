/** What a reader tells a source about one read (sources may ignore it). */
export interface ReadHint {
  /**
   * A background read (the layer filesystem's prefetch / background fetch): it may wait behind
   * on-demand reads. On-demand reads (a container waiting) always go first.
   */
  background?: boolean
  /**
   * A prefetch of what a container is about to read (a layer's landmark region at mount, a
   * learned order): fetched right behind on-demand reads (the node's block exchange sends them
   * after the on-demand wants and keeps requests free for those) — background reads move a few
   * blocks at a time on an idle link, far too slowly for a mount that waits on them — and not an
   * on-demand read (not recorded as the workload's, not counted as its activity).
   */
  prefetch?: boolean
}

/**
 * A blob that can be read by byte range: an IPFS file, a local file, a blob the daemon serves to
 * the FUSE manager. Every implementation passes the same test suite (test/source/suite.ts).
 */
export interface RangeSource {
  /** Size of the blob in bytes. */
  size: () => Promise<number>
  /**
   * Reads `length` bytes at `offset`. Returns fewer bytes only at the end of the blob, and an
   * empty array at or past the end. Rejects with an AbortError when `signal` aborts. `hint` is
   * advice: a source that cannot prioritise ignores it. The bytes may be shared (a view of a
   * block the node holds): callers must not modify them.
   */
  read: (offset: number, length: number, signal?: AbortSignal, hint?: ReadHint) => Promise<Uint8Array>
  /** Releases file handles, connections, ... Reads after close fail. */
  close?: () => Promise<void>
}
