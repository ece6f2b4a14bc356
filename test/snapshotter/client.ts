import * as grpc from '@grpc/grpc-js'
import { loadSnapshotsService } from '../../src/snapshotter/service.js'
import type * as api from '../../src/snapshotter/api.js'

/** A typed, promise-based client of the Snapshots service on a unix socket (as containerd would call it). */
export interface SnapshotsClient {
  prepare (key: string, parent?: string, labels?: api.Labels): Promise<api.Mount[]>
  view (key: string, parent?: string, labels?: api.Labels): Promise<api.Mount[]>
  mounts (key: string): Promise<api.Mount[]>
  commit (name: string, key: string, labels?: api.Labels): Promise<void>
  remove (key: string): Promise<void>
  stat (key: string): Promise<api.Info>
  update (info: Partial<api.Info> & { name: string }, paths?: string[]): Promise<api.Info>
  list (...filters: string[]): Promise<api.Info[]>
  /** the raw stream, to test cancellation */
  listStream (filters: string[]): grpc.ClientReadableStream<api.ListSnapshotsResponse>
  usage (key: string): Promise<{ size: number, inodes: number }>
  cleanup (): Promise<void>
  close (): void
}

type RawClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>

export interface SnapshotsClientOptions {
  /** every call fails with DEADLINE_EXCEEDED after this long (a stalled server cannot hang a test) */
  deadlineMs?: number
}

export function snapshotsClient (socket: string, namespace = 'default', options: SnapshotsClientOptions = {}): SnapshotsClient {
  const Ctor = grpc.makeGenericClientConstructor(loadSnapshotsService() as grpc.ServiceDefinition<grpc.UntypedServiceImplementation>, 'Snapshots')
  const raw = new Ctor(`unix://${socket}`, grpc.credentials.createInsecure()) as unknown as RawClient
  const md = (): grpc.Metadata => {
    const m = new grpc.Metadata()
    m.set('containerd-namespace', namespace)
    return m
  }
  const opts = (): grpc.CallOptions => options.deadlineMs != null ? { deadline: Date.now() + options.deadlineMs } : {}
  const call = async <Req, Res>(method: string, req: Req): Promise<Res> => await new Promise((resolve, reject) => {
    const fn = raw[method]
    if (fn == null) { reject(new Error(`no method ${method}`)); return }
    fn.call(raw, req, md(), opts(), (err: grpc.ServiceError | null, res: Res) => { err != null ? reject(err) : resolve(res) })
  })
  const listStream = (filters: string[]): grpc.ClientReadableStream<api.ListSnapshotsResponse> =>
    (raw.List as (req: api.ListSnapshotsRequest, md: grpc.Metadata, o: grpc.CallOptions) => grpc.ClientReadableStream<api.ListSnapshotsResponse>).call(raw, { snapshotter: '', filters }, md(), opts())
  return {
    prepare: async (key, parent = '', labels = {}) => (await call<api.PrepareSnapshotRequest, api.PrepareSnapshotResponse>('Prepare', { snapshotter: '', key, parent, labels })).mounts,
    view: async (key, parent = '', labels = {}) => (await call<api.ViewSnapshotRequest, api.ViewSnapshotResponse>('View', { snapshotter: '', key, parent, labels })).mounts,
    mounts: async (key) => (await call<api.MountsRequest, api.MountsResponse>('Mounts', { snapshotter: '', key })).mounts,
    commit: async (name, key, labels = {}) => { await call('Commit', { snapshotter: '', name, key, labels }) },
    remove: async (key) => { await call('Remove', { snapshotter: '', key }) },
    stat: async (key) => (await call<api.StatSnapshotRequest, api.StatSnapshotResponse>('Stat', { snapshotter: '', key })).info as api.Info,
    update: async (info, paths = []) => (await call<unknown, api.UpdateSnapshotResponse>('Update', { snapshotter: '', info, updateMask: { paths } })).info as api.Info,
    list: async (...filters) => await new Promise((resolve, reject) => {
      const out: api.Info[] = []
      const s = listStream(filters)
      s.on('data', (m: api.ListSnapshotsResponse) => { out.push(...m.info) })
      s.on('error', reject)
      s.on('end', () => { resolve(out) })
    }),
    listStream,
    usage: async (key) => {
      const r = await call<api.UsageRequest, api.UsageResponse>('Usage', { snapshotter: '', key })
      return { size: Number(r.size), inodes: Number(r.inodes) }
    },
    cleanup: async () => { await call('Cleanup', { snapshotter: '' }) },
    close: () => { raw.close() }
  }
}

/** The gRPC status code of a rejected call (undefined when it resolved). */
export async function codeOf (p: Promise<unknown>): Promise<number | undefined> {
  try {
    await p
    return undefined
  } catch (err) {
    return (err as grpc.ServiceError).code
  }
}

/** The rejection of a call, for asserting code and message together. */
export async function errorOf (p: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await p
  } catch (err) {
    return err as grpc.ServiceError
  }
  throw new Error('expected the call to fail')
}
