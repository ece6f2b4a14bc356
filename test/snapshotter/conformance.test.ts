import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { silentLogger } from '../../src/logging.js'
import { Snapshotter } from '../../src/snapshotter/snapshotter.js'
import { SnapshotterServer } from '../../src/snapshotter/service.js'
import { mountsUnder, unmountUnder } from '../../src/fs/mountinfo.js'
import { isRoot, needs } from '../helpers/env.js'
import { CONFORMANCE_CASES, conformanceAvailable, runConformance } from '../helpers/conformance.js'

describe.skipIf(needs({ root: isRoot, go: conformanceAvailable }))('containerd snapshotter conformance suite', () => {
  let dir: string
  let server: SnapshotterServer
  let socket: string

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'snapshotter-conformance-'))
    socket = join(dir, 'snapshotter.sock')
    const logger = silentLogger()
    server = new SnapshotterServer({ snapshotter: new Snapshotter({ logger }, { root: join(dir, 'root') }), logger }, { address: socket })
    await server.start()
  })

  afterAll(async () => {
    await server?.stop()
    if (dir != null) {
      await unmountUnder(dir)
      if ((await mountsUnder(dir)).length === 0) rmSync(dir, { recursive: true, force: true })
    }
  })

  it('passes every case through containerd\'s proxy client', async () => {
    const { code, output, passed, failed, skipped } = await runConformance(socket, dir)
    if (failed.length > 0 || code !== 0) console.error(output)
    expect(failed, `failed cases: ${failed.join(', ')}`).toEqual([])
    expect(code).toBe(0)
    expect(skipped).toEqual(['Rename']) // the suite skips Rename itself
    expect(passed).toEqual(CONFORMANCE_CASES)
  }, 1_800_000)
})
