import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { hasCommand } from './env.js'
import { cacheDir, referenceDir } from '../../scripts/fixtures/tools.js'

/** containerd's own snapshotter test suite, built from the reference sources once and cached. */
export function conformanceBinary (): string {
  const bin = join(cacheDir, 'bin', 'snapshotter-conformance.test')
  if (!existsSync(bin)) {
    mkdirSync(join(cacheDir, 'bin'), { recursive: true })
    execFileSync('bash', [join(referenceDir, 'conformance', 'build.sh'), join(cacheDir, 'bin')], {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: { ...process.env, SKIP_APT: '1' }
    })
  }
  return bin
}

export const conformanceAvailable = (): boolean => existsSync(join(cacheDir, 'bin', 'snapshotter-conformance.test')) || hasCommand('go')()

/** The 20 cases a correct snapshotter passes (`Rename` is skipped by the suite itself). */
export const CONFORMANCE_CASES = [
  '128LayersMount', 'Basic', 'Chown', 'CloseTwice', 'DeletedFilesInChildSnapshot', 'DirectoryPermissionOnCommit',
  'LayerFileupdate', 'MoveFileFromLowerLayer', 'PreareViewFailingtest', 'Remove', 'RemoveDirectoryInLowerLayer',
  'RemoveIntermediateSnapshot', 'RootPermission', 'StatActive', 'StatComitted', 'StatInWalk', 'TransitivityTest',
  'Update', 'ViewReadonly', 'Walk'
]

export interface ConformanceResult { code: number | null, output: string, passed: string[], failed: string[], skipped: string[] }

/** Runs the suite against a snapshotter socket (as root, in our mount namespace). */
export async function runConformance (socket: string, workDir: string): Promise<ConformanceResult> {
  const bin = conformanceBinary()
  // spawn, never execFileSync: an in-process server must keep answering meanwhile
  const { code, output } = await new Promise<{ code: number | null, output: string }>((resolve, reject) => {
    const child = spawn(bin, ['-test.v', '-test.timeout', '30m'], {
      cwd: workDir,
      env: { ...process.env, SNAPSHOTTER_SOCKET: socket, TMPDIR: workDir },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let out = ''
    child.stdout.on('data', (b: Buffer) => { out += b.toString() })
    child.stderr.on('data', (b: Buffer) => { out += b.toString() })
    child.on('error', reject)
    child.on('close', (c) => { resolve({ code: c, output: out }) })
  })
  const cases = (re: RegExp): string[] => [...new Set([...output.matchAll(re)].map((m) => m[1] as string))]
  return {
    code,
    output,
    passed: cases(/--- PASS: TestSnapshotterConformance\/(\S+)/g).sort(),
    failed: cases(/--- FAIL: TestSnapshotterConformance\/(\S+)/g),
    skipped: cases(/--- SKIP: TestSnapshotterConformance\/(\S+)/g)
  }
}
