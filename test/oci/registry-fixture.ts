/**
 * A real registry for tests: Debian's `docker-registry` (Distribution 2.8) on 127.0.0.1 with
 * filesystem storage in a temp dir. `stop()` kills it and removes the dir.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export const REGISTRY_BIN = '/usr/bin/docker-registry'

export interface TestRegistry {
  /** `http://127.0.0.1:PORT` */
  url: string
  /** `127.0.0.1:PORT` */
  host: string
  stop: () => Promise<void>
}

/** A free TCP port on 127.0.0.1 (bind to 0, read it, release it). */
export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port
      s.close(() => { resolve(port) })
    })
  })
}

async function waitReady (url: string, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 15_000
  while (Date.now() < deadline) {
    if (child.exitCode != null) throw new Error(`docker-registry exited with ${child.exitCode}: ${log()}`)
    try {
      const res = await fetch(`${url}/v2/`)
      await res.body?.cancel()
      if (res.status === 200) return
    } catch {}
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  throw new Error(`docker-registry did not become ready at ${url}: ${log()}`)
}

export async function startRegistry (): Promise<TestRegistry> {
  const dir = await mkdtemp(join(tmpdir(), 'ipfs-estargz-registry-'))
  let child: ChildProcess | undefined
  try {
    for (let attempt = 0; ; attempt++) {
      const port = await freePort()
      const host = `127.0.0.1:${port}`
      const config = join(dir, 'config.yml')
      await writeFile(config, [
        'version: 0.1',
        'log:',
        '  level: error',
        '  accesslog:',
        '    disabled: true',
        'storage:',
        '  filesystem:',
        `    rootdirectory: ${join(dir, 'data')}`,
        '  delete:',
        '    enabled: true',
        'http:',
        `  addr: ${host}`,
        '  secret: ipfs-estargz-test',
        ''
      ].join('\n'))
      let output = ''
      child = spawn(REGISTRY_BIN, ['serve', config], { stdio: ['ignore', 'pipe', 'pipe'] })
      child.stdout?.on('data', (d: Buffer) => { output = (output + d.toString()).slice(-4000) })
      child.stderr?.on('data', (d: Buffer) => { output = (output + d.toString()).slice(-4000) })
      try {
        await waitReady(`http://${host}`, child, () => output)
      } catch (err) {
        child.kill('SIGKILL')
        // A port taken between freePort() and the bind: try another.
        if (attempt < 3 && /address already in use/.test(output)) continue
        throw err
      }
      const proc = child
      // If the test process dies without running afterAll, do not leave the registry running.
      const onExit = (): void => { proc.kill('SIGKILL') }
      process.once('exit', onExit)
      return {
        url: `http://${host}`,
        host,
        stop: async () => {
          process.off('exit', onExit)
          if (proc.exitCode == null) {
            const exited = new Promise(resolve => proc.once('exit', resolve))
            proc.kill('SIGTERM')
            await Promise.race([exited, new Promise(resolve => setTimeout(resolve, 3000))])
            if (proc.exitCode == null) proc.kill('SIGKILL')
          }
          await rm(dir, { recursive: true, force: true })
        }
      }
    }
  } catch (err) {
    child?.kill('SIGKILL')
    await rm(dir, { recursive: true, force: true })
    throw err
  }
}
