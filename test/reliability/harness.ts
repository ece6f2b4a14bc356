/**
 * The reliability campaign's shared parts: how many cases to run (a reduced set in `npm test`,
 * the full set under `npm run test:reliability`), the property every parser must keep on hostile
 * input, and the figures each test records for docs/reliability.md.
 *
 * A new parser is fuzzed with `fuzzTarget(name, arbitrary, run)`; a new fault or load test calls
 * `record({...})` with what it injected and what survived. Nothing else needs to change: the
 * report script (scripts/reliability/report.ts) tabulates whatever was recorded.
 */
import { appendFileSync } from 'node:fs'
import fc from 'fast-check'
import { expect } from 'vitest'
import { IpfsEstargzError } from '../../src/errors.js'

/** `npm run test:reliability` sets RELIABILITY_FULL=1: thousands of cases, the load and soak tests. */
export const FULL = process.env.RELIABILITY_FULL === '1'

/**
 * Cases per parser: `full` in the full run, `reduced` in `npm test`. RELIABILITY_CASES overrides
 * both (e.g. 100000 for a night's run).
 */
export function cases (reduced: number, full: number): number {
  const override = Number(process.env.RELIABILITY_CASES)
  if (Number.isSafeInteger(override) && override > 0) return override
  return FULL ? full : reduced
}

/** A seed per run, printed on failure by fast-check; RELIABILITY_SEED replays one. */
export const SEED = Number.isSafeInteger(Number(process.env.RELIABILITY_SEED)) && process.env.RELIABILITY_SEED != null
  ? Number(process.env.RELIABILITY_SEED)
  : Date.now() % 2 ** 31

/** One line of figures; the report groups them by `kind`. */
export type Figure =
  | { kind: 'fuzz', target: string, cases: number, accepted: number, rejected: number, codes: string[] }
  | { kind: 'fault', fault: string, injected: number, survived: number, note?: string }
  | { kind: 'load', load: string, held: string, seconds: number, rssDriftMiB?: number, fdDrift?: number, p99Ms?: number, p99LastMs?: number, note?: string }
  | { kind: 'wrong-bytes', what: string, bytesChecked: number, wrong: number }

/** Appends a figure to RELIABILITY_RESULTS (a JSON-lines file) when the report is being built. */
export function record (figure: Figure): void {
  const file = process.env.RELIABILITY_RESULTS
  if (file == null || file === '') return
  appendFileSync(file, JSON.stringify({ ...figure, at: new Date().toISOString() }) + '\n')
}

/** A stable code: ours are `ERR_…`, the abort is `ABORT_ERR`. */
const CODE = /^(ERR_[A-Z0-9_]+|ABORT_ERR)$/

/** The property on an error: one of our typed errors with a stable code. */
export function assertTyped (err: unknown, target: string, input?: () => string): asserts err is IpfsEstargzError {
  if (err instanceof IpfsEstargzError && CODE.test(err.code)) return
  const e = err as Error
  throw new Error(`${target}: untyped error ${e?.name ?? typeof err}: ${e?.message ?? String(err)}${input != null ? `\ninput: ${input()}` : ''}`, { cause: err })
}

/** Runs `fn` with a deadline: a hang is a failure, not a stuck test. */
export async function within<T> (ms: number, what: string, fn: () => Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      fn(),
      new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`${what}: no answer within ${ms} ms (a hang)`)) }, ms) })
    ])
  } finally {
    clearTimeout(timer)
  }
}

export interface FuzzOptions {
  /** Cases in `npm test` and in the full run. */
  reduced: number
  full: number
  /** One case's deadline. */
  deadlineMs?: number
  /** Heap growth allowed over the whole run (after a GC when exposed). */
  maxHeapGrowthMiB?: number
  /** Shows an input in a failure message (default: its JSON, cut). */
  show?: (input: never) => string
}

/**
 * Fuzzes one parser: `run` gets each generated input and either returns (the input was accepted)
 * or throws; a throw must be one of our typed errors, and no case may take longer than its
 * deadline. Records the counts and the codes seen.
 */
export async function fuzzTarget<T> (target: string, arb: fc.Arbitrary<T>, run: (input: T) => Promise<unknown> | unknown, opts: FuzzOptions): Promise<void> {
  const numRuns = cases(opts.reduced, opts.full)
  const deadline = opts.deadlineMs ?? 5_000
  const show = (opts.show as ((x: T) => string) | undefined) ?? ((x: T) => preview(x))
  let accepted = 0
  let rejected = 0
  const codes = new Set<string>()
  const heapBefore = heapUsed()
  await fc.assert(fc.asyncProperty(arb, async (input) => {
    try {
      await within(deadline, target, async () => { await run(input) })
      accepted++
    } catch (err) {
      if ((err as Error).message?.endsWith('(a hang)')) throw new Error(`${(err as Error).message}\ninput: ${show(input)}`)
      assertTyped(err, target, () => show(input))
      rejected++
      codes.add(err.code)
    }
  }), { numRuns, seed: SEED, endOnFailure: true, reporter: shortReporter })
  const growth = (heapUsed() - heapBefore) / 2 ** 20
  expect(growth, `${target}: heap grew by ${growth.toFixed(1)} MiB over ${numRuns} cases`).toBeLessThan(opts.maxHeapGrowthMiB ?? 256)
  record({ kind: 'fuzz', target, cases: accepted + rejected, accepted, rejected, codes: [...codes].sort() })
}

/**
 * fast-check's report with the counterexample cut to a readable length (a 4 KiB key printed
 * whole buries the reason); `RELIABILITY_SEED=<seed>` replays the run.
 */
export function shortReporter<T> (details: fc.RunDetails<T>): void {
  if (!details.failed) return
  const example = fc.stringify(details.counterexample)
  const cause = details.errorInstance as Error | undefined
  throw new Error(`property failed after ${details.numRuns} cases (RELIABILITY_SEED=${details.seed}, path ${details.counterexamplePath ?? ''}): ${cause?.message ?? ''}\ncounterexample: ${example.length > 1500 ? example.slice(0, 1500) + '…' : example}`, { cause })
}

function heapUsed (): number {
  (globalThis as { gc?: () => void }).gc?.()
  return process.memoryUsage().heapUsed
}

export function preview (x: unknown): string {
  if (x instanceof Uint8Array) return `${x.length} bytes: ${Buffer.from(x.subarray(0, 96)).toString('hex')}${x.length > 96 ? '…' : ''}`
  try {
    const s = JSON.stringify(x, (_k, v: unknown) => v instanceof Uint8Array ? `<${v.length} bytes>` : v)
    return s.length > 400 ? s.slice(0, 400) + '…' : s
  } catch {
    return String(x)
  }
}

/**
 * Mutations of a real sample: flipped bits, bytes set to boundary values, cuts, splices,
 * duplicated and deleted ranges, and insertions of "big number" text and bytes where sizes live.
 * The sample stays mostly intact, so the parser gets past its first checks and the mutation lands
 * deep inside.
 */
export function mutationOf (sample: Uint8Array, opts: { maxMutations?: number } = {}): fc.Arbitrary<Uint8Array> {
  const n = sample.length
  const pos = fc.nat({ max: Math.max(0, n - 1) })
  const interesting = fc.constantFrom(0x00, 0xff, 0x7f, 0x80, 0x30, 0x37, 0x20, 0x01)
  const mutation = fc.oneof(
    fc.record({ t: fc.constant('flip' as const), at: pos, bit: fc.nat({ max: 7 }) }),
    fc.record({ t: fc.constant('set' as const), at: pos, v: interesting }),
    fc.record({ t: fc.constant('byte' as const), at: pos, v: fc.nat({ max: 255 }) }),
    fc.record({ t: fc.constant('cut' as const), at: pos }),
    fc.record({ t: fc.constant('delete' as const), at: pos, len: fc.nat({ max: 600 }) }),
    fc.record({ t: fc.constant('dup' as const), at: pos, len: fc.nat({ max: 600 }) }),
    fc.record({ t: fc.constant('insert' as const), at: pos, bytes: fc.uint8Array({ maxLength: 64 }) }),
    fc.record({ t: fc.constant('big' as const), at: pos, text: fc.constantFrom('77777777777', '99999999999999999999', 'ffffffffffffffff', '-1', '1e308', '\xff\xff\xff\xff\xff\xff\xff\x7f') })
  )
  return fc.array(mutation, { minLength: 1, maxLength: opts.maxMutations ?? 4 }).map((ms) => {
    let b = Buffer.from(sample)
    for (const m of ms) {
      const at = Math.min(m.at, Math.max(0, b.length - 1))
      switch (m.t) {
        case 'flip': if (b.length > 0) b[at] ^= 1 << m.bit; break
        case 'set': case 'byte': if (b.length > 0) b[at] = m.v; break
        case 'cut': b = b.subarray(0, at); break
        case 'delete': b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.len)]); break
        case 'dup': b = Buffer.concat([b.subarray(0, at + m.len), b.subarray(at)]); break
        case 'insert': b = Buffer.concat([b.subarray(0, at), m.bytes, b.subarray(at)]); break
        case 'big': { const t = Buffer.from(m.text, 'latin1'); b = Buffer.concat([b.subarray(0, at), t, b.subarray(Math.min(b.length, at + t.length))]); break }
      }
    }
    return new Uint8Array(b)
  })
}

/** Random bytes, a mutation of one of the samples, or a sample whole (so valid input is tried too). */
export function bytesLike (samples: Uint8Array[], opts: { maxRandom?: number } = {}): fc.Arbitrary<Uint8Array> {
  return fc.oneof(
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: opts.maxRandom ?? 2048 }) },
    { weight: 1, arbitrary: fc.constantFrom(...samples) },
    { weight: 8, arbitrary: fc.oneof(...samples.map(s => mutationOf(s))) }
  )
}

/** Splits bytes into a stream of random-sized pieces (parsers must not depend on chunk boundaries). */
export async function * piecesOf (bytes: Uint8Array, sizes: number[]): AsyncGenerator<Uint8Array> {
  let at = 0
  let i = 0
  while (at < bytes.length) {
    const n = Math.max(1, sizes.length > 0 ? sizes[i++ % sizes.length] : bytes.length)
    yield bytes.subarray(at, at + n)
    at += n
  }
}
