import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseRecord } from '../../src/optimize/index.js'
import { hasCommand, hasFuse, needs } from '../helpers/env.js'
import { debianImageNeeds, debianPythonImage, type DebianPythonImage } from '../../scripts/fixtures/debian-image.js'
import { cli, expectPrioritized, layerToc, layoutLayers, mountsUnder, pathsOf, verifyLayout } from './helpers.js'

interface OptimizeJson {
  root?: string
  run?: { exitCode: number | null, stopped: boolean }
  images: Array<{ layers: Array<{ landmark: string, prioritizedFiles: number }> }>
}

describe.skipIf(needs({ ...debianImageNeeds, fuse: hasFuse, unshare: hasCommand('unshare'), go: hasCommand('go') }))('ipfs-estargz optimize (debootstrap + python3 image)', () => {
  let image: DebianPythonImage
  let dir: string
  let tmp: string
  let server: Server
  let connections = 0

  beforeAll(async () => {
    image = await debianPythonImage()
    dir = await mkdtemp(join(tmpdir(), 'optimize-debian-'))
    tmp = join(dir, 'tmp')
    await mkdir(tmp)
    server = createServer(socket => { connections++; socket.destroy() })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  }, 900_000)
  afterAll(async () => {
    server?.close()
    await new Promise(resolve => setTimeout(resolve, 1500)) // Helia writes its peer record after stop
    if (dir != null) await rm(dir, { recursive: true, force: true })
  })

  it('python3 -c "import json, email": what it opens comes first in the layer holding it; verified by the reference, published to IPFS; no network', async () => {
    const port = (server.address() as { port: number }).port
    const script = [
      'import json, email, socket',
      "open('/usr/lib/python3.11/written-by-the-workload', 'w').write('x')",
      'try:',
      `    socket.create_connection(('127.0.0.1', ${port}), timeout=3)`,
      "    print('CONNECTED')",
      'except OSError as e:',
      "    print('no network:', type(e).__name__)"
    ].join('\n')
    const out = join(dir, 'out')
    const r = await cli(['optimize', `oci:${image.layout}`, '--repo', join(dir, 'repo'), '--output', `oci:${out}`, '--record-out', join(dir, 'rec'), '--json', '--level', '1',
      '--entrypoint', '["python3"]', '--args', JSON.stringify(['-c', script])], { env: { TMPDIR: tmp } })
    expect(r.code, r.stderr).toBe(0)
    const json = JSON.parse(r.stdout) as OptimizeJson
    expect(json.root).toMatch(/^baf/)
    expect(json.run).toMatchObject({ exitCode: 0, stopped: false })
    // the sandbox has no network: the host's listener on 127.0.0.1 is out of reach
    expect(r.stderr).toMatch(/no network: ConnectionRefusedError/)
    expect(r.stderr).not.toContain('CONNECTED')
    expect(connections).toBe(0)
    expect(existsSync('/usr/lib/python3.11/written-by-the-workload')).toBe(false)

    const record = parseRecord(await readFile(join(dir, 'rec'), 'utf8'))
    expect(record[0]).toMatchObject({ path: 'usr/bin/python3.11', layerIndex: 1 }) // exec'd first; python3 is a symlink to it
    const l0 = pathsOf(record, 0)
    const l1 = pathsOf(record, 1)
    expect(l0).toContain('usr/lib/x86_64-linux-gnu/libc.so.6')
    expect(l1).toEqual(expect.arrayContaining(['usr/lib/python3.11/json/__init__.py', 'usr/lib/python3.11/email/__init__.py']))
    expect(json.images[0].layers.map(l => [l.landmark, l.prioritizedFiles])).toEqual([['prefetch', l0.length], ['prefetch', l1.length]])
    const tocs = await Promise.all(layoutLayers(out).map(layerToc))
    expectPrioritized(tocs[0], l0)
    expectPrioritized(tocs[1], l1)
    expect(tocs[1].prioritized?.[0]).toBe('usr/bin/python3.11')
    verifyLayout(out)
    expect((await cli(['image', 'ls', '--repo', join(dir, 'repo')])).stdout).toContain(json.root)
    expect(mountsUnder(tmp)).toEqual([])
  })
})
