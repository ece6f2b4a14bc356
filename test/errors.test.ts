import { readdir, readFile } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { AbortError, InvalidOptionError, IpfsEstargzError, isAbortError } from '../src/errors.js'
import * as bundle from '../src/bundle/errors.js'
import * as cli from '../src/cli/errors.js'
import * as containerd from '../src/containerd/errors.js'
import * as convert from '../src/convert/errors.js'
import * as daemon from '../src/daemon/errors.js'
import * as estargz from '../src/estargz/errors.js'
import * as fs from '../src/fs/errors.js'
import * as fusemgr from '../src/fusemgr/errors.js'
import * as ipfs from '../src/ipfs/errors.js'
import * as mirror from '../src/mirror/errors.js'
import * as oci from '../src/oci/errors.js'
import * as optimize from '../src/optimize/errors.js'
import * as prefetchRecord from '../src/prefetch-record/errors.js'
import * as snapshotter from '../src/snapshotter/errors.js'
import * as source from '../src/source/errors.js'
import { silentLogger } from '../src/logging.js'

/** Every module that defines errors, by where it lives. */
const MODULES: Record<string, Record<string, unknown>> = {
  'src/errors.ts': await import('../src/errors.js'),
  'src/estargz/errors.ts': estargz,
  'src/oci/errors.ts': oci,
  'src/fs/errors.ts': fs,
  'src/ipfs/errors.ts': ipfs,
  'src/source/errors.ts': source,
  'src/snapshotter/errors.ts': snapshotter,
  'src/containerd/errors.ts': containerd,
  'src/fusemgr/errors.ts': fusemgr,
  'src/convert/errors.ts': convert,
  'src/daemon/errors.ts': daemon,
  'src/prefetch-record/errors.ts': prefetchRecord,
  'src/optimize/errors.ts': optimize,
  'src/mirror/errors.ts': mirror,
  'src/bundle/errors.ts': bundle,
  'src/cli/errors.ts': cli
}

/** The abstract bases: the only error classes without a code of their own. */
const BASES = new Set<unknown>([IpfsEstargzError, estargz.EstargzError, oci.OciError, oci.RegistryError, fs.FsError, ipfs.IpfsError, snapshotter.SnapshotterError,
  containerd.ContainerdError, containerd.ContainerdCallError,
  fusemgr.FusemgrError, fusemgr.CallRefusedError, daemon.DaemonError, cli.CliError, prefetchRecord.PrefetchRecordError, optimize.OptimizeError, mirror.MirrorError, bundle.BundleError])

describe('IpfsEstargzError', () => {
  it('takes code from the class\'s static code and name from the class', () => {
    const err = new estargz.TocDigestMismatchError('sha256:aa', 'sha256:bb')
    expect(err.code).toBe('ERR_TOC_DIGEST_MISMATCH')
    expect(err.code).toBe(estargz.TocDigestMismatchError.code)
    expect(err.name).toBe('TocDigestMismatchError')
    expect(err.message).toBe('TOC digest mismatch: expected sha256:aa, got sha256:bb')
    expect(err.expected).toBe('sha256:aa')
    expect(String(err)).toBe('TocDigestMismatchError: TOC digest mismatch: expected sha256:aa, got sha256:bb')
    expect(err.stack).toMatch(/^TocDigestMismatchError: TOC digest mismatch/)
    const plain = new estargz.MalformedTocError('bad TOC')
    expect(plain).toMatchObject({ code: 'ERR_MALFORMED_TOC', name: 'MalformedTocError', message: 'bad TOC' })
  })

  it('keeps the cause, with the default constructor and with one that has fields', () => {
    const cause = new Error('inner')
    expect(new estargz.MalformedGzipError('outer', { cause }).cause).toBe(cause)
    expect(new estargz.EntryNotFoundError('a/b', { cause }).cause).toBe(cause)
    expect(new AbortError(undefined, { cause }).cause).toBe(cause)
    expect(new estargz.MalformedGzipError('no cause')).not.toHaveProperty('cause')
  })

  it('is the root of every module\'s base: instanceof works along the chain', () => {
    const err = new estargz.ChunkDigestMismatchError('f', 0, 'sha256:aa', 'sha256:bb')
    expect(err).toBeInstanceOf(estargz.ChunkDigestMismatchError)
    expect(err).toBeInstanceOf(estargz.EstargzError)
    expect(err).toBeInstanceOf(IpfsEstargzError)
    expect(err).toBeInstanceOf(Error)
    expect(err).not.toBeInstanceOf(estargz.TocDigestMismatchError)
    // the shared errors belong to no module
    expect(new AbortError()).not.toBeInstanceOf(estargz.EstargzError)
    expect(new InvalidOptionError('x')).toBeInstanceOf(IpfsEstargzError)
  })

  it('refuses a class that declares no code (a bug, not an error with an undefined code)', () => {
    class NoCodeError extends IpfsEstargzError {}
    expect(() => new NoCodeError('x')).toThrow(TypeError)
    expect(() => new NoCodeError('x')).toThrow(/NoCodeError declares no static code/)
  })
})

describe('AbortError', () => {
  it('has the code and name Node gives its own aborts', () => {
    expect(new AbortError()).toMatchObject({ code: 'ABORT_ERR', name: 'AbortError', message: 'the operation was aborted' })
    const ac = new AbortController()
    ac.abort()
    let node: unknown
    try { ac.signal.throwIfAborted() } catch (err) { node = err }
    expect(node).not.toBeInstanceOf(AbortError) // a DOMException: not ours, known by its name
    expect(isAbortError(node)).toBe(true)
    expect(isAbortError(new AbortError())).toBe(true)
    expect(isAbortError(new estargz.TruncatedBlobError('x'))).toBe(false)
    expect(isAbortError(undefined)).toBe(false)
    expect(isAbortError('AbortError')).toBe(false)
    // with the operation's signal: any error after it fired is the abort (a library failing its own way)
    expect(isAbortError(new Error('socket closed'), ac.signal)).toBe(true)
    expect(isAbortError(new Error('socket closed'), new AbortController().signal)).toBe(false)
  })
})

describe('our error classes', () => {
  const classes = new Map<Function, string[]>()
  for (const [file, mod] of Object.entries(MODULES)) {
    for (const [name, value] of Object.entries(mod)) {
      if (typeof value === 'function' && (value === IpfsEstargzError || value.prototype instanceof IpfsEstargzError)) {
        classes.set(value, [...(classes.get(value) ?? []), `${file}: ${name}`])
      }
    }
  }

  it('come from every errors module of src, and from nowhere else', async () => {
    const src = join(import.meta.dirname, '../src')
    const files = (await readdir(src, { recursive: true })).filter(f => f.endsWith('.ts')).sort()
    expect(files.filter(f => basename(f) === 'errors.ts').map(f => `src/${f}`)).toEqual(Object.keys(MODULES).sort())
    const elsewhere: string[] = []
    for (const f of files.filter(f => basename(f) !== 'errors.ts')) {
      const text = await readFile(join(src, f), 'utf8')
      for (const m of text.matchAll(/class (\w+) extends (\w*Error)\b/g)) elsewhere.push(`${f}: ${m[1]}`)
      if (text.includes('Object.assign(new')) elsewhere.push(`${f}: Object.assign(new ...)`)
    }
    // the one exception: a stand-in for interface-store's NotFoundError, which Helia knows by name
    expect(elsewhere).toEqual(['ipfs/stores.ts: NotFoundError'])
  })

  it('are named as they are exported', () => {
    for (const [cls, exports] of classes) {
      for (const e of exports) expect(`${e.split(': ')[0]}: ${cls.name}`).toBe(e)
    }
  })

  it('each have a code of their own, unless an abstract base; no two share one', () => {
    const owner = new Map<string, string>()
    for (const [cls, exports] of classes) {
      const code = Object.hasOwn(cls, 'code') ? (cls as unknown as { code: unknown }).code : undefined
      if (BASES.has(cls)) {
        expect(code, `${cls.name} is a base`).toBe(undefined)
        continue
      }
      expect(code, `${exports[0]} has a code`).toMatch(/^(ERR_[A-Z0-9_]+|ABORT_ERR)$/)
      expect(owner.get(code as string), `${code as string} belongs to one class`).toBe(undefined)
      owner.set(code as string, cls.name)
    }
    expect(owner.size).toBeGreaterThan(10)
  })
})

describe('errors once built inline keep their codes, now with classes', () => {
  it('a bad IPFS reference', async () => {
    const { parseIpfsRef } = await import('../src/ipfs/image-reader.js')
    expect(() => parseIpfsRef('ipfs://not-a-cid')).toThrow(ipfs.InvalidIpfsReferenceError)
    expect(() => parseIpfsRef('ipfs://not-a-cid')).toThrow(expect.objectContaining({ code: 'ERR_BAD_IPFS_REF', ref: 'ipfs://not-a-cid' }))
  })

  it('a file source that is not a file', async () => {
    const { FileSource } = await import('../src/source/file.js')
    await expect(FileSource.open(import.meta.dirname)).rejects.toThrow(source.NotAFileError)
    await expect(FileSource.open(import.meta.dirname)).rejects.toMatchObject({ code: 'ERR_NOT_A_FILE', path: import.meta.dirname })
  })

  it('a daemon whose health route does not answer in time is down, with the reason', async () => {
    const { probeDaemon } = await import('../src/daemon/control-client.js')
    const { createServer } = await import('node:net')
    const { mkdtemp, rm } = await import('node:fs/promises')
    const { tmpdir } = await import('node:os')
    const { join } = await import('node:path')
    const dir = await mkdtemp(join(tmpdir(), 'probe-'))
    const silent = createServer(() => {}) // accepts, never answers
    await new Promise<void>(resolve => silent.listen(join(dir, 'api.sock'), resolve))
    try {
      expect(await probeDaemon(join(dir, 'api.sock'), 200)).toEqual({ state: 'down', why: 'no answer within 200 ms' })
      expect(await probeDaemon(join(dir, 'none.sock'), 200)).toEqual({ state: 'absent' })
    } finally {
      silent.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('a forwarded command the CLI cancels (Ctrl-C) ends with the shared AbortError', async () => {
    const { runInDaemon } = await import('../src/daemon/control-client.js')
    const ac = new AbortController()
    ac.abort()
    const err = await runInDaemon('/nonexistent/api.sock', ['id'], { signal: ac.signal, stdoutClosedCode: 141 }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(AbortError)
    expect(err).toMatchObject({ code: 'ABORT_ERR', name: 'AbortError', message: 'cancelled: the daemon stops the command' })
  })

  it('a command in a daemon that names another repo', async () => {
    const { commandContext } = await import('../src/cli/context.js')
    const { openCommandRepo } = await import('../src/cli/repo.js')
    const served = { path: '/var/lib/served', node: {}, index: {}, close: async () => {} } as unknown as import('../src/ipfs/index.js').OpenRepo
    const err = await commandContext.run({ stdout: async () => {}, stderr: () => {}, repo: served }, async () => await openCommandRepo('/somewhere/else', silentLogger()).catch((e: unknown) => e))
    expect(err).toBeInstanceOf(ipfs.RepoMismatchError)
    expect(err).toMatchObject({ code: 'ERR_REPO_MISMATCH', message: 'the daemon serves the repo /var/lib/served, not /somewhere/else' })
  })

  it('a gateway block over the limit, declared or not', async () => {
    const { GatewayClient } = await import('../src/ipfs/gateway.js')
    const { createServer } = await import('node:http')
    const { CID } = await import('multiformats/cid')
    const server = createServer((req, res) => {
      const body = Buffer.alloc(5000)
      res.writeHead(200, req.url?.includes('declared') === true ? { 'content-length': body.length } : {}).end(body)
    })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    try {
      const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`
      const client = new GatewayClient({ logger: silentLogger() }, [base], { maxBlockSize: 4000 })
      const cid = CID.parse('bafkqaaa')
      // the stage skips a failing gateway: its reason is what one fetch throws
      const fetchOne = (client as unknown as { fetchOne: (base: string, cid: unknown) => Promise<unknown> }).fetchOne.bind(client)
      await expect(fetchOne(`${base}/declared`, cid)).rejects.toMatchObject({ code: 'ERR_GATEWAY_BLOCK_TOO_LARGE', message: 'block of 5000 bytes exceeds the limit of 4000' })
      await expect(fetchOne(base, cid)).rejects.toThrow(ipfs.GatewayBlockTooLargeError)
    } finally {
      server.closeAllConnections()
      await new Promise(resolve => server.close(resolve))
    }
  })

  it('an aborted readahead read', async () => {
    const { ReadaheadSource } = await import('../src/source/readahead.js')
    const inner = { size: async () => 10, read: async () => new Uint8Array(1) }
    const ac = new AbortController()
    ac.abort()
    await expect(new ReadaheadSource(inner, { windowBytes: 4 }).read(0, 1, ac.signal)).rejects.toThrow(AbortError)
    await expect(new ReadaheadSource(inner, { windowBytes: 4 }).read(0, 1, ac.signal)).rejects.toMatchObject({ code: 'ABORT_ERR', name: 'AbortError' })
  })
})
