/**
 * Fuzzing the Snapshots gRPC service as containerd reaches it (a unix socket): random sequences
 * of calls with random and hostile keys, parents, labels, filters, update paths and namespaces.
 * Every call answers within its deadline with a status of ours (never UNKNOWN or INTERNAL, which
 * mean an error we did not type); after each sequence everything can be removed and no directory
 * is left behind.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { status } from '@grpc/grpc-js'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { silentLogger } from '../../src/logging.js'
import { mountsUnder, unmountUnder } from '../../src/fs/mountinfo.js'
import { Snapshotter } from '../../src/snapshotter/snapshotter.js'
import { SnapshotterServer } from '../../src/snapshotter/service.js'
import { isRoot, needs } from '../helpers/env.js'
import { snapshotsClient, type SnapshotsClient } from '../../scripts/fixtures/snapshots-client.js'
import { cases, record, SEED, shortReporter } from './harness.js'

/** Namespaces the service takes (the others must be refused); '' is containerd's "none sent", i.e. "default". */
const VALID_NAMESPACES = ['default', 'k8s.io']
const KEYS = ['a', 'b', 'c', 'base', 'default/1/sha256:' + 'a'.repeat(64), '', '..', 'a/../../b', 'x\0y', 'k'.repeat(4097), 'é'.repeat(2049), 'ok/./x']
const key = fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...KEYS) }, { weight: 1, arbitrary: fc.string({ maxLength: 30 }) })
const labels = fc.oneof(
  fc.dictionary(fc.oneof(fc.constantFrom('containerd.io/snapshot.ref', 'containerd.io/snapshot/remote', 'containerd.io/gc.root', 'k'), fc.string({ maxLength: 10 })), fc.string({ maxLength: 40 }), { maxKeys: 5 }),
  fc.constant({ big: 'v'.repeat(5000) }),
  fc.constant(Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`l${i}`, 'v'])))
)
const filter = fc.oneof(
  fc.constantFrom('kind==active', 'kind==committed', 'name==a', 'parent==base', 'labels."k"==v', 'name~=^(a+)+$', 'name~=[ab]{200}', 'labels.x', 'name==a,kind==view', 'labels."x', 'name~=/(/', ''),
  fc.string({ maxLength: 40 })
)
const op = fc.oneof(
  fc.record({ m: fc.constant('prepare' as const), key, parent: key, labels }),
  fc.record({ m: fc.constant('view' as const), key, parent: key, labels }),
  fc.record({ m: fc.constant('commit' as const), name: key, key, labels }),
  fc.record({ m: fc.constant('remove' as const), key }),
  fc.record({ m: fc.constant('stat' as const), key }),
  fc.record({ m: fc.constant('mounts' as const), key }),
  fc.record({ m: fc.constant('usage' as const), key }),
  fc.record({ m: fc.constant('update' as const), key, labels, paths: fc.array(fc.oneof(fc.constantFrom('labels', 'labels.k', 'parent', 'name', 'kind', 'labels.'), fc.string({ maxLength: 10 })), { maxLength: 4 }) }),
  fc.record({ m: fc.constant('list' as const), filters: fc.array(filter, { maxLength: 4 }) })
)
type Op = typeof op extends fc.Arbitrary<infer T> ? T : never

describe.skipIf(needs({ root: isRoot }))('fuzz: Snapshots gRPC service', () => {
  let dir: string
  let root: string
  let server: SnapshotterServer
  const clients = new Map<string, SnapshotsClient>()
  let socket: string

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'reliability-grpc-'))
    root = join(dir, 'root')
    socket = join(dir, 'snapshotter.sock')
    const logger = silentLogger()
    server = new SnapshotterServer({ snapshotter: new Snapshotter({ logger }, { root }), logger }, { address: socket })
    await server.start()
  })

  afterAll(async () => {
    for (const c of clients.values()) c.close()
    await server?.stop()
    await unmountUnder(dir)
    if ((await mountsUnder(dir)).length === 0) rmSync(dir, { recursive: true, force: true })
  })

  const client = (ns: string): SnapshotsClient => {
    let c = clients.get(ns)
    if (c == null) { c = snapshotsClient(socket, ns, { deadlineMs: 10_000 }); clients.set(ns, c) }
    return c
  }

  async function call (c: SnapshotsClient, o: Op): Promise<void> {
    switch (o.m) {
      case 'prepare': await c.prepare(o.key, o.parent, o.labels); break
      case 'view': await c.view(o.key, o.parent, o.labels); break
      case 'commit': await c.commit(o.name, o.key, o.labels); break
      case 'remove': await c.remove(o.key); break
      case 'stat': await c.stat(o.key); break
      case 'mounts': await c.mounts(o.key); break
      case 'usage': await c.usage(o.key); break
      case 'update': await c.update({ name: o.key, labels: o.labels }, o.paths); break
      case 'list': await c.list(...o.filters); break
    }
  }

  /** Removes every snapshot of a namespace, children first. */
  async function clear (c: SnapshotsClient): Promise<void> {
    let left = await c.list()
    while (left.length > 0) {
      const parents = new Set(left.map((s) => s.parent))
      for (const s of left.filter((s) => !parents.has(s.name))) await c.remove(s.name)
      left = await c.list()
    }
  }

  it('random call sequences: statuses of ours, no hang, nothing left behind', async () => {
    const namespace = fc.constantFrom(...VALID_NAMESPACES, 'default', 'a/b', '-x', 'n'.repeat(77), '')
    const seq = fc.array(fc.tuple(namespace, op), { minLength: 1, maxLength: 12 })
    let calls = 0
    let refused = 0
    const codes = new Set<string>()
    await fc.assert(fc.asyncProperty(seq, async (ops) => {
      for (const [ns, o] of ops) {
        calls++
        try {
          await call(client(ns), o)
        } catch (err) {
          const code = (err as { code?: number }).code
          expect([status.UNKNOWN, status.INTERNAL, status.DEADLINE_EXCEEDED, undefined], `${o.m} in ${ns}: ${(err as Error).message}`).not.toContain(code)
          refused++
          codes.add(status[code as number])
        }
      }
      for (const ns of VALID_NAMESPACES) await clear(client(ns))
      await client('default').cleanup()
      expect(readdirSync(join(root, 'snapshots'))).toEqual([])
    }), { numRuns: cases(25, 600), seed: SEED, endOnFailure: true, reporter: shortReporter })
    record({ kind: 'fuzz', target: 'snapshotter gRPC calls', cases: calls, accepted: calls - refused, rejected: refused, codes: [...codes].sort() })
  })
})
