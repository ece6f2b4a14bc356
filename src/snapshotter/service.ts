import { chmodSync, mkdirSync, rmSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { NAMESPACE_METADATA_KEY, PROTO_DIR, PROTO_LOADER_OPTIONS } from './api.js'
import { SnapshotterError } from './errors.js'
import type * as api from './api.js'
import type { SnapshotInfo, Snapshotter } from './snapshotter.js'
import type { Logger } from '../logging.js'

export const DEFAULTS = {
  /** socket file mode: owner and group only */
  socketMode: 0o660,
  /** infos per List message (containerd's snapshotservice sends blocks of 100) */
  listBatchSize: 100,
  /** stop(): how long to wait for in-flight calls before cutting them off */
  shutdownTimeoutMs: 10_000,
  /** namespace used when a call carries no `containerd-namespace` metadata */
  defaultNamespace: 'default'
}

export interface SnapshotterServerOptions extends Partial<typeof DEFAULTS> {
  /** unix socket path */
  address: string
}

export interface SnapshotterServerComponents {
  snapshotter: Snapshotter
  logger: Logger
}

export { PROTO_DIR }
export const SNAPSHOTS_PROTO = 'containerd/services/snapshots/v1/snapshots.proto'

/** Loads the Snapshots service definition (also used by test clients). */
export function loadSnapshotsService (): grpc.ServiceDefinition {
  const def = protoLoader.loadSync(SNAPSHOTS_PROTO, { ...PROTO_LOADER_OPTIONS, includeDirs: [PROTO_DIR] })
  const svc = def['containerd.services.snapshots.v1.Snapshots']
  if (svc == null || !('Prepare' in svc)) throw new Error('containerd.services.snapshots.v1.Snapshots missing from the proto files')
  return svc as grpc.ServiceDefinition
}

type Unary<Req, Res> = grpc.handleUnaryCall<Req, Res>

/**
 * The `containerd.services.snapshots.v1.Snapshots` gRPC service on a unix socket. Thin: it reads
 * the namespace, calls {@link Snapshotter}, converts types and errors. `start()` starts the
 * snapshotter first (remote snapshots are mounted again) and only then binds the socket.
 */
export class SnapshotterServer {
  readonly address: string
  private readonly snapshotter: Snapshotter
  private readonly logger: Logger
  private readonly options: typeof DEFAULTS
  private server?: grpc.Server

  constructor (components: SnapshotterServerComponents, options: SnapshotterServerOptions) {
    this.snapshotter = components.snapshotter
    this.logger = components.logger
    this.address = resolve(options.address)
    this.options = { ...DEFAULTS, ...options }
  }

  async start (): Promise<void> {
    if (this.server != null) return
    await this.snapshotter.start()
    const server = new grpc.Server()
    server.addService(loadSnapshotsService(), this.handlers())
    // chmod: the mode of a new folder is subject to the umask (077 in the daemon)
    if (mkdirSync(dirname(this.address), { recursive: true, mode: 0o710 }) != null) chmodSync(dirname(this.address), 0o710)
    rmSync(this.address, { force: true }) // a stale socket from a crash gives EADDRINUSE
    await new Promise<void>((resolve, reject) => {
      server.bindAsync(`unix://${this.address}`, grpc.ServerCredentials.createInsecure(), (err) => { err != null ? reject(err) : resolve() })
    })
    chmodSync(this.address, this.options.socketMode)
    this.server = server
    this.logger.info({ address: this.address }, 'snapshotter listening')
  }

  /** Stops accepting calls, lets in-flight ones finish (up to `shutdownTimeoutMs`), then stops the snapshotter. */
  async stop (): Promise<void> {
    const server = this.server
    if (server == null) return
    this.server = undefined
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => { server.forceShutdown(); resolve() }, this.options.shutdownTimeoutMs)
      server.tryShutdown(() => { clearTimeout(timer); resolve() })
    })
    await this.snapshotter.stop()
  }

  private namespace (call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>): string {
    const v = call.metadata.get(NAMESPACE_METADATA_KEY)[0]
    return typeof v === 'string' && v !== '' ? v : this.options.defaultNamespace
  }

  private unary<Req, Res> (name: string, fn: (req: Req, ns: string) => Promise<Res> | Res): Unary<Req, Res> {
    return (call, callback) => {
      const ns = this.namespace(call)
      Promise.resolve().then(async () => await fn(call.request, ns)).then(
        (res) => { callback(null, res) },
        (err: unknown) => { callback(this.toStatus(name, ns, err)) }
      )
    }
  }

  private toStatus (method: string, ns: string, err: unknown): Partial<grpc.StatusObject> {
    if (err instanceof SnapshotterError) {
      this.logger.debug({ method, namespace: ns, code: err.code }, err.message)
      return { code: err.grpcCode, details: err.message }
    }
    this.logger.error({ method, namespace: ns, err }, 'snapshotter call failed')
    return { code: grpc.status.UNKNOWN, details: (err as Error)?.message ?? String(err) }
  }

  private handlers (): grpc.UntypedServiceImplementation {
    const sn = this.snapshotter
    const list: grpc.handleServerStreamingCall<api.ListSnapshotsRequest, api.ListSnapshotsResponse> = (call) => {
      const ns = this.namespace(call)
      let infos: SnapshotInfo[]
      try {
        infos = sn.list(ns, call.request.filters)
      } catch (err) {
        call.emit('error', this.toStatus('List', ns, err))
        return
      }
      const batch = this.options.listBatchSize
      let i = 0
      // honour backpressure and stop as soon as the client goes away
      const pump = (): void => {
        while (i < infos.length) {
          if (call.cancelled) return
          const block = infos.slice(i, i + batch).map(toApiInfo)
          i += batch
          if (!call.write({ info: block })) { call.once('drain', pump); return }
        }
        if (!call.cancelled) call.end()
      }
      pump()
    }
    return {
      Prepare: this.unary<api.PrepareSnapshotRequest, api.PrepareSnapshotResponse>('Prepare', async (r, ns) => ({ mounts: await sn.prepare(ns, r.key, r.parent, r.labels) })),
      View: this.unary<api.ViewSnapshotRequest, api.ViewSnapshotResponse>('View', async (r, ns) => ({ mounts: await sn.view(ns, r.key, r.parent, r.labels) })),
      Mounts: this.unary<api.MountsRequest, api.MountsResponse>('Mounts', async (r, ns) => ({ mounts: await sn.mounts(ns, r.key) })),
      Commit: this.unary<api.CommitSnapshotRequest, api.Empty>('Commit', async (r, ns) => { await sn.commit(ns, r.name, r.key, r.labels); return {} }),
      Remove: this.unary<api.RemoveSnapshotRequest, api.Empty>('Remove', async (r, ns) => { await sn.remove(ns, r.key); return {} }),
      Stat: this.unary<api.StatSnapshotRequest, api.StatSnapshotResponse>('Stat', (r, ns) => ({ info: toApiInfo(sn.stat(ns, r.key)) })),
      Update: this.unary<api.UpdateSnapshotRequest, api.UpdateSnapshotResponse>('Update', (r, ns) => {
        const info = sn.update(ns, r.info?.name ?? '', r.info?.labels ?? {}, r.updateMask?.paths ?? [])
        return { info: toApiInfo(info) }
      }),
      List: list,
      Usage: this.unary<api.UsageRequest, api.UsageResponse>('Usage', async (r, ns) => {
        const u = await sn.usage(ns, r.key)
        return { size: String(u.size), inodes: String(u.inodes) }
      }),
      Cleanup: this.unary<api.CleanupRequest, api.Empty>('Cleanup', async () => { await sn.cleanup(); return {} })
    }
  }
}

const KIND_NAME = { view: 'VIEW', active: 'ACTIVE', committed: 'COMMITTED' } as const

export function toTimestamp (ns: bigint): api.Timestamp {
  return { seconds: (ns / 1_000_000_000n).toString(), nanos: Number(ns % 1_000_000_000n) }
}

export function toApiInfo (info: SnapshotInfo): api.Info {
  return {
    name: info.name,
    parent: info.parent,
    kind: KIND_NAME[info.kind],
    createdAt: toTimestamp(info.created),
    updatedAt: toTimestamp(info.updated),
    labels: info.labels
  }
}
