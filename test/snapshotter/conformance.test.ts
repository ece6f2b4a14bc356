import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { silentLogger } from '../../src/logging.js'
import { Snapshotter } from '../../src/snapshotter/snapshotter.js'
import { SnapshotterServer } from '../../src/snapshotter/service.js'
import { mountsUnder, unmountUnder } from '../../src/snapshotter/overlay.js'
import { hasCommand, isRoot, needs } from '../helpers/env.js'
import { cacheDir, repoRoot } from '../helpers/tools.js'

/** containerd's own snapshotter suite (../shared/conformance), built once and cached. */
function conformanceBinary (): string {
  const bin = join(cacheDir, 'bin', 'snapshotter-conformance.test')
  if (!existsSync(bin)) {
    mkdirSync(join(cacheDir, 'bin'), { recursive: true })
    execFileSync('bash', [join(repoRoot, '..', 'shared', 'conformance', 'build.sh'), join(cacheDir, 'bin')], {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: { ...process.env, SKIP_APT: '1' }
    })
  }
  return bin
}

const goAvailable = (): boolean => existsSync(join(cacheDir, 'bin', 'snapshotter-conformance.test')) || hasCommand('go')()

describe.skipIf(needs({ root: isRoot, go: goAvailable }))('containerd snapshotter conformance suite', () => {
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
    const bin = conformanceBinary()
    // the suite must run concurrently with our in-process server: spawn, never execFileSync
    const { code, output } = await new Promise<{ code: number | null, output: string }>((resolve, reject) => {
      const child = spawn(bin, ['-test.v', '-test.timeout', '30m'], {
        cwd: dir,
        env: { ...process.env, SNAPSHOTTER_SOCKET: socket, TMPDIR: dir },
        stdio: ['ignore', 'pipe', 'pipe']
      })
      let output = ''
      child.stdout.on('data', (b: Buffer) => { output += b.toString() })
      child.stderr.on('data', (b: Buffer) => { output += b.toString() })
      child.on('error', reject)
      child.on('close', (code) => { resolve({ code, output }) })
    })
    const cases = (re: RegExp): string[] => [...new Set([...output.matchAll(re)].map((m) => m[1] as string))]
    const passed = cases(/--- PASS: TestSnapshotterConformance\/(\S+)/g)
    const failed = cases(/--- FAIL: TestSnapshotterConformance\/(\S+)/g)
    const skipped = cases(/--- SKIP: TestSnapshotterConformance\/(\S+)/g)
    if (failed.length > 0 || code !== 0) console.error(output)
    expect(failed, `failed cases: ${failed.join(', ')}`).toEqual([])
    expect(code).toBe(0)
    expect(skipped).toEqual(['Rename']) // the suite skips Rename itself
    expect(passed.sort()).toEqual([
      '128LayersMount', 'Basic', 'Chown', 'CloseTwice', 'DeletedFilesInChildSnapshot', 'DirectoryPermissionOnCommit',
      'LayerFileupdate', 'MoveFileFromLowerLayer', 'PreareViewFailingtest', 'Remove', 'RemoveDirectoryInLowerLayer',
      'RemoveIntermediateSnapshot', 'RootPermission', 'StatActive', 'StatComitted', 'StatInWalk', 'TransitivityTest',
      'Update', 'ViewReadonly', 'Walk'
    ])
  }, 1_800_000)
})
