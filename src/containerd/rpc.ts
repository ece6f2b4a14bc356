import { resolve } from 'node:path'
import * as grpc from '@grpc/grpc-js'
import { CancelledError, ContainerdInternalError, fromGrpcError } from './errors.js'
import { LEASE_HEADER, NAMESPACE_HEADER, SERVICES, loadServices, type ServiceName } from '../wire/index.js'

let definitions: Record<ServiceName, grpc.ServiceDefinition> | undefined

/** Loads (once) the definitions of every service this client speaks. */
function services (): Record<ServiceName, grpc.ServiceDefinition> {
  definitions ??= loadServices(Object.keys(SERVICES) as ServiceName[])
  return definitions
}

/** Who a call acts for: the containerd namespace, and the lease that protects what it creates. */
export interface CallContext {
  namespace: string
  lease?: string
}

export interface CallOptions {
  signal?: AbortSignal
}

/**
 * One gRPC connection to containerd and typed helpers for its three call shapes. Every call
 * carries the namespace (and lease) as metadata, can be cancelled by an AbortSignal, and fails
 * with the typed error of {@link fromGrpcError}, naming the call and its object.
 */
export class Rpc {
  readonly client: grpc.Client
  private readonly services = services()

  constructor (readonly address: string) {
    const target = address.startsWith('unix:') ? address : `unix://${resolve(address)}`
    this.client = new grpc.Client(target, grpc.credentials.createInsecure(), {
      // containerd's own clients allow 16 MiB messages; our writes stay at 1 MiB anyway
      'grpc.max_receive_message_length': 16 << 20,
      'grpc.max_send_message_length': 16 << 20
    })
  }

  private method (service: ServiceName, method: string): grpc.MethodDefinition<unknown, unknown> {
    const m = this.services[service][method]
    if (m == null) throw new Error(`${SERVICES[service][1]} has no method ${method} in our proto files`)
    return m
  }

  private metadata (ctx: CallContext): grpc.Metadata {
    const md = new grpc.Metadata()
    md.set(NAMESPACE_HEADER, ctx.namespace)
    if (ctx.lease != null) md.set(LEASE_HEADER, ctx.lease)
    return md
  }

  async unary<Req, Res> (service: ServiceName, method: string, req: Req, ctx: CallContext, what: string, options: CallOptions = {}): Promise<Res> {
    const m = this.method(service, method)
    const name = `${service}.${method}`
    options.signal?.throwIfAborted()
    return await new Promise<Res>((resolve, reject) => {
      const call = this.client.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, req, this.metadata(ctx), {},
        (err, res) => {
          options.signal?.removeEventListener('abort', onAbort)
          if (err != null) reject(fromGrpcError(err, name, `${name} ${what}`, this.address))
          else resolve(res as Res)
        })
      const onAbort = (): void => { call.cancel() }
      options.signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  async * serverStream<Req, Res> (service: ServiceName, method: string, req: Req, ctx: CallContext, what: string, options: CallOptions = {}): AsyncGenerator<Res> {
    const m = this.method(service, method)
    const name = `${service}.${method}`
    options.signal?.throwIfAborted()
    const call = this.client.makeServerStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, req, this.metadata(ctx), {})
    const onAbort = (): void => { call.cancel() }
    options.signal?.addEventListener('abort', onAbort, { once: true })
    try {
      for await (const msg of call) yield msg as Res
    } catch (err) {
      throw fromGrpcError(err, name, `${name} ${what}`, this.address)
    } finally {
      options.signal?.removeEventListener('abort', onAbort)
      call.cancel() // no-op once the stream ended; stops it when the consumer broke out early
    }
  }

  /** A bidirectional stream with a pull-style reader: `send` a request, then `receive` its answer. */
  duplex<Req, Res> (service: ServiceName, method: string, ctx: CallContext, what: string, options: CallOptions = {}): Duplex<Req, Res> {
    const m = this.method(service, method)
    const name = `${service}.${method}`
    options.signal?.throwIfAborted()
    const call = this.client.makeBidiStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, this.metadata(ctx), {})
    const onAbort = (): void => { call.cancel() }
    options.signal?.addEventListener('abort', onAbort, { once: true })
    const reader = (call as AsyncIterable<unknown>)[Symbol.asyncIterator]()
    const map = (err: unknown): Error => {
      if (options.signal?.aborted === true) return new CancelledError(`${name} ${what}: cancelled`, grpc.status.CANCELLED, name)
      return fromGrpcError(err, name, `${name} ${what}`, this.address)
    }
    return {
      send: async (req: Req): Promise<void> => {
        await new Promise<void>((resolve, reject) => {
          call.write(req, (err?: Error | null) => { err != null ? reject(map(err)) : resolve() })
        })
      },
      receive: async (): Promise<Res> => {
        let r: IteratorResult<unknown>
        try { r = await reader.next() } catch (err) { throw map(err) }
        if (r.done === true) throw map(new ContainerdInternalError(`${name} ${what}: stream ended without an answer (gRPC status INTERNAL)`, grpc.status.INTERNAL, name))
        return r.value as Res
      },
      close: () => {
        options.signal?.removeEventListener('abort', onAbort)
        call.end()
      },
      cancel: () => {
        options.signal?.removeEventListener('abort', onAbort)
        call.cancel()
      }
    }
  }

  /** Resolves once the connection is up; rejects with UnavailableError after `timeoutMs`. */
  async ready (timeoutMs: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.client.waitForReady(Date.now() + timeoutMs, (err) => {
        if (err == null) { resolve(); return }
        reject(fromGrpcError({ code: grpc.status.UNAVAILABLE, details: err.message }, 'connect', 'connect', this.address))
      })
    })
  }

  close (): void {
    this.client.close()
  }
}

export interface Duplex<Req, Res> {
  send: (req: Req) => Promise<void>
  receive: () => Promise<Res>
  /** half-closes our side (the call ends once the server answered) */
  close: () => void
  cancel: () => void
}
