import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { repoRoot } from '../../scripts/fixtures/tools.js'

export interface SpawnedServer {
  pid: number
  kill: (sig: NodeJS.Signals) => Promise<void>
}

/**
 * Starts test/snapshotter/server-entry.ts in its own process (one node process: a signal hits the
 * server itself). Also for tests whose failure mode is a server that stops answering: a stalled
 * child cannot stall the test runner.
 */
export async function spawnServer (root: string, socket: string, flags: string[] = []): Promise<SpawnedServer> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(repoRoot, 'test', 'snapshotter', 'server-entry.ts'), root, socket, ...flags], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stderr = ''
  child.stderr.on('data', (b: Buffer) => { stderr += b.toString() })
  const exited = new Promise<void>((resolve) => child.once('exit', () => { resolve() }))
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (b: Buffer) => { if (b.toString().includes('READY')) resolve() })
    child.once('exit', (code) => { reject(new Error(`server exited with ${code}: ${stderr}`)) })
  })
  return {
    pid: child.pid as number,
    kill: async (sig) => {
      if (child.exitCode == null && child.signalCode == null) child.kill(sig)
      await exited
    }
  }
}
