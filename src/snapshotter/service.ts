import { chmodSync, mkdirSync, rmSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import * as grpc from '@grpc/grpc-js'
import { SnapshotterError } from './errors.js'
import { DEFAULTS as LIMITS, validateFilters, validateKeyRef, validateLabels, validateNamespace, validateNewKey, validateUpdatePaths } from './validate.js'
import type { SnapshotInfo, Snapshotter } from './snapshotter.js'
import type { Logger } from '../logging.js'
import { NAMESPACE_HEADER, loadServices } from '../wire/index.js'
import type * as api from '../wire/index.js'

export const DEFAULTS = {
  /** socket file mode: owner and group only */
  socketMode: 0o660,
  /** infos per List message (containerd's snapshotservice sends blocks of 100) */
  listBatchSize: 100,
  /** stop(): how long to wait for in-flight calls before cutting them off */
  shutdownTimeoutMs: 10_000,
  /** namespace used when a call carries no `containerd-namespace` metadata */
  defaultNamespace: 'default',
  /**
   * largest request message gRPC decodes: a Prepare with two keys and `maxLabels` labels of
   * `maxLabelSize` fits (grpc-js would take 4 MiB)
   */
  maxMessageBytes: 2 * 1024 * 1024,
  /** keys, labels, filters: see validate.ts */
  ...LIMITS
}

export interface SnapshotterServerOptions extends Partial<typeof DEFAULTS> {
  /** unix socket path */
  address: string
}

export interface SnapshotterServerComponents {
  snapshotter: Snapshotter
  logger: Logger
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
    const server = new grpc.Server({ 'grpc.max_receive_message_length': this.options.maxMessageBytes })
    server.addService(loadServices(['snapshots']).snapshots, this.handlers())
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
    const v = call.metadata.get(NAMESPACE_HEADER)[0]
    return typeof v === 'string' && v !== '' ? v : this.options.defaultNamespace
  }

  /**
   * Every request is checked here, before the snapshotter sees it: `check` validates the fields
   * the method takes (keys, labels, filters), the namespace is checked for all.
   */
  private unary<Req, Res> (name: string, check: (req: Req) => void, fn: (req: Req, ns: string) => Promise<Res> | Res): Unary<Req, Res> {
    return (call, callback) => {
      const ns = this.namespace(call)
      Promise.resolve().then(async () => {
        validateNamespace(ns)
        check(call.request)
        return await fn(call.request, ns)
      }).then(
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
    const limits = this.options
    const newKey = (field: string, key: string): void => { validateNewKey(field, key, limits) }
    const keyRef = (field: string, key: string): void => { validateKeyRef(field, key, limits) }
    const labels = (l: api.Labels): void => { validateLabels(l, limits) }
    const create = (r: api.PrepareSnapshotRequest | api.ViewSnapshotRequest): void => {
      newKey('key', r.key)
      if (r.parent !== '') keyRef('parent', r.parent)
      labels(r.labels)
    }
    const list: grpc.handleServerStreamingCall<api.ListSnapshotsRequest, api.ListSnapshotsResponse> = (call) => {
      const ns = this.namespace(call)
      const batch = this.options.listBatchSize
      // honour backpressure and stop as soon as the client goes away
      const send = (infos: SnapshotInfo[], from = 0): void => {
        let i = from
        while (i < infos.length) {
          if (call.cancelled) return
          const block = infos.slice(i, i + batch).map(toApiInfo)
          i += batch
          if (!call.write({ info: block })) { call.once('drain', () => { send(infos, i) }); return }
        }
        if (!call.cancelled) call.end()
      }
      const gone = new AbortController()
      call.once('cancelled', () => { gone.abort() })
      Promise.resolve().then(async () => {
        validateNamespace(ns)
        validateFilters(call.request.filters, limits)
        return await sn.list(ns, call.request.filters, gone.signal)
      }).then(
        (infos) => { send(infos) },
        (err: unknown) => { if (!call.cancelled) call.emit('error', this.toStatus('List', ns, err)) }
      )
    }
    return {
      Prepare: this.unary<api.PrepareSnapshotRequest, api.PrepareSnapshotResponse>('Prepare', create, async (r, ns) => ({ mounts: await sn.prepare(ns, r.key, r.parent, r.labels) })),
      View: this.unary<api.ViewSnapshotRequest, api.ViewSnapshotResponse>('View', create, async (r, ns) => ({ mounts: await sn.view(ns, r.key, r.parent, r.labels) })),
      Mounts: this.unary<api.MountsRequest, api.MountsResponse>('Mounts', (r) => { keyRef('key', r.key) }, async (r, ns) => ({ mounts: await sn.mounts(ns, r.key) })),
      Commit: this.unary<api.CommitSnapshotRequest, api.Empty>('Commit', (r) => { newKey('name', r.name); keyRef('key', r.key); labels(r.labels) }, async (r, ns) => { await sn.commit(ns, r.name, r.key, r.labels); return {} }),
      Remove: this.unary<api.RemoveSnapshotRequest, api.Empty>('Remove', (r) => { keyRef('key', r.key) }, async (r, ns) => { await sn.remove(ns, r.key); return {} }),
      Stat: this.unary<api.StatSnapshotRequest, api.StatSnapshotResponse>('Stat', (r) => { keyRef('key', r.key) }, (r, ns) => ({ info: toApiInfo(sn.stat(ns, r.key)) })),
      Update: this.unary<api.UpdateSnapshotRequest, api.UpdateSnapshotResponse>('Update', (r) => {
        keyRef('name', r.info?.name ?? '')
        labels(r.info?.labels ?? {})
        validateUpdatePaths(r.updateMask?.paths ?? [], limits)
      }, (r, ns) => {
        const info = sn.update(ns, r.info?.name ?? '', r.info?.labels ?? {}, r.updateMask?.paths ?? [])
        return { info: toApiInfo(info) }
      }),
      List: list,
      Usage: this.unary<api.UsageRequest, api.UsageResponse>('Usage', (r) => { keyRef('key', r.key) }, async (r, ns) => {
        const u = await sn.usage(ns, r.key)
        return { size: String(u.size), inodes: String(u.inodes) }
      }),
      Cleanup: this.unary<api.CleanupRequest, api.Empty>('Cleanup', () => {}, async () => { await sn.cleanup(); return {} })
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
