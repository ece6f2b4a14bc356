import { chmod, rm, writeFile } from 'node:fs/promises'
import { createServer, request, type Server } from 'node:http'
import { join } from 'node:path'
import type { Logger } from '../logging.js'
import { answersOnSocket } from '../unix-http.js'
import { BLOBS_PREFIX, type BlobReader } from './blob-api.js'

/**
 * The control API: a unix socket on which the daemon runs CLI commands for clients, with its
 * own open repo (like Kubo: while a daemon owns a repo, the CLI talks to it instead of opening
 * the repo). `POST /v1/run` takes `{ argv }` and answers with NDJSON lines:
 * `{ "out": base64 }`, `{ "err": text }`, and finally `{ "exit": code }`. With a `blobs` component
 * it also serves `GET /v1/blobs/...`, the byte ranges the FUSE manager's mounts read.
 */
export type CommandRunner = (argv: string[], io: { stdout: (data: Uint8Array | string) => Promise<void>, stderr: (text: string) => void, signal: AbortSignal }) => Promise<number>

/** File in the repo naming the control socket, so `--repo DIR` finds a running daemon. */
export const API_FILE = 'api'

export class ControlServer {
  private server?: Server

  constructor (private readonly components: { logger: Logger, run: CommandRunner, blobs?: BlobReader }, private readonly options: { address: string, repo: string }) {}

  async start (): Promise<void> {
    await rm(this.options.address, { force: true })
    const server = createServer((req, res) => {
      if (req.method === 'GET' && req.url === '/v1/health') {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}')
        return
      }
      if (this.components.blobs != null && req.url?.startsWith(BLOBS_PREFIX) === true) {
        this.components.blobs.handle(req, res)
        return
      }
      if (req.method !== 'POST' || req.url !== '/v1/run') {
        res.writeHead(404).end()
        return
      }
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        let argv: string[]
        try {
          argv = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { argv: string[] }).argv
          if (!Array.isArray(argv) || argv.some(a => typeof a !== 'string')) throw new Error('argv must be a list of strings')
        } catch (err) {
          res.writeHead(400).end(JSON.stringify({ error: (err as Error).message }))
          return
        }
        const ac = new AbortController()
        res.on('close', () => ac.abort()) // the client went away (Ctrl-C): stop the command
        res.writeHead(200, { 'content-type': 'application/x-ndjson' })
        const line = async (obj: unknown): Promise<void> => {
          if (!res.write(JSON.stringify(obj) + '\n')) await new Promise(resolve => res.once('drain', resolve))
        }
        this.components.logger.info({ argv }, 'running command for a client')
        this.components.run(argv, {
          stdout: async (data) => { await line({ out: Buffer.from(data).toString('base64') }) },
          stderr: (text) => { void line({ err: text }) },
          signal: ac.signal
        }).then(async (code) => { await line({ exit: code }); res.end() }, async (err: Error) => { await line({ err: `${err.message}\n` }); await line({ exit: 1 }); res.end() })
      })
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.options.address, () => { server.off('error', reject); resolve() })
    })
    await chmod(this.options.address, 0o600)
    await writeFile(join(this.options.repo, API_FILE), this.options.address)
    this.server = server
  }

  async stop (): Promise<void> {
    await rm(join(this.options.repo, API_FILE), { force: true })
    const server = this.server
    if (server == null) return
    this.server = undefined
    server.closeAllConnections()
    await new Promise<void>(resolve => server.close(() => resolve()))
    await rm(this.options.address, { force: true })
  }
}

/** Is a daemon answering on this control socket? */
export async function daemonAlive (address: string): Promise<boolean> {
  return await answersOnSocket(address, '/v1/health')
}

/** Runs a command in the daemon, streaming its output to ours; resolves with its exit code. */
export async function runInDaemon (address: string, argv: string[], signal?: AbortSignal): Promise<number> {
  return await new Promise((resolve, reject) => {
    const req = request({ socketPath: address, path: '/v1/run', method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      if (res.statusCode !== 200) {
        reject(new Error(`daemon refused the command (HTTP ${String(res.statusCode)})`))
        res.resume()
        return
      }
      let buf = ''
      let code = 1
      res.setEncoding('utf8')
      res.on('data', (s: string) => {
        buf += s
        let i: number
        while ((i = buf.indexOf('\n')) >= 0) {
          const msg = JSON.parse(buf.slice(0, i)) as { out?: string, err?: string, exit?: number }
          buf = buf.slice(i + 1)
          if (msg.out != null) process.stdout.write(Buffer.from(msg.out, 'base64'))
          if (msg.err != null) process.stderr.write(msg.err)
          if (msg.exit != null) code = msg.exit
        }
      })
      res.on('end', () => resolve(code))
      res.on('error', reject)
    })
    signal?.addEventListener('abort', () => req.destroy(), { once: true })
    req.on('error', reject)
    req.end(JSON.stringify({ argv }))
  })
}
