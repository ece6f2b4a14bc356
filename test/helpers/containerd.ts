import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, rm, rmdir, writeFile } from 'node:fs/promises'
import { existsSync, openSync, closeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { ContainerdClient } from '../../src/containerd/client.js'
import { hasCommand, isRoot } from './env.js'

const run = promisify(execFile)

/** Prerequisites, for `describe.skipIf(needs(containerdNeeds))`. scripts/setup.sh installs them. */
export const containerdNeeds = { root: isRoot, containerd: hasCommand('containerd'), runc: hasCommand('runc') }

export interface StartContainerdOptions {
  /** snapshotter name → its gRPC socket, registered as `[proxy_plugins.<name>]` */
  proxyPlugins?: Record<string, string>
  /** how long to wait for the socket to answer (ms) */
  startTimeoutMs?: number
}

export interface PrivateContainerd {
  /** temp dir holding config.toml, root/, state/, the socket and containerd.log */
  dir: string
  address: string
  root: string
  state: string
  /** a client on `default` namespace; closed by stop() */
  client: ContainerdClient
  /**
   * runs `ctr --address <sock> --namespace <ns> ARGS…` and returns stdout (throws with stderr on
   * failure); `run` gets `--fifo-dir`/`--runc-root` inside the temp dir
   */
  ctr: (args: string[], options?: { namespace?: string, timeoutMs?: number }) => Promise<string>
  /** containerd's log so far (for failure messages) */
  log: () => Promise<string>
  /** kills containerd and its shims, unmounts what is left under root/state, removes the temp dir */
  stop: () => Promise<void>
}

function configToml (dir: string, address: string, proxyPlugins: Record<string, string>): string {
  const lines = [
    'version = 2',
    `root = ${JSON.stringify(join(dir, 'root'))}`,
    `state = ${JSON.stringify(join(dir, 'state'))}`,
    // the CRI plugin pulls in networking and a lot of start-up work we do not need
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
    '',
    '[grpc]',
    `  address = ${JSON.stringify(address)}`,
    '',
    '[ttrpc]',
    `  address = ${JSON.stringify(`${address}.ttrpc`)}`,
    '',
    '[debug]',
    '  level = "debug"',
    '',
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${JSON.stringify(join(dir, 'opt'))}`,
    '',
    // containerd's defaults, spelled out: GC runs after deletes (what the lease test relies on)
    '[plugins."io.containerd.gc.v1.scheduler"]',
    '  pause_threshold = 0.02',
    '  deletion_threshold = 0',
    '  mutation_threshold = 100',
    '  schedule_delay = "0s"',
    '  startup_delay = "100ms"',
    ''
  ]
  for (const [name, socket] of Object.entries(proxyPlugins)) {
    lines.push(`[proxy_plugins.${JSON.stringify(name)}]`, '  type = "snapshot"', `  address = ${JSON.stringify(socket)}`, '')
  }
  return lines.join('\n')
}

async function mountsUnder (prefix: string): Promise<string[]> {
  const text = await readFile('/proc/mounts', 'utf8')
  return text.split('\n')
    .map(l => l.split(' ')[1])
    .filter((m): m is string => m != null)
    .map(m => m.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter(m => m === prefix || m.startsWith(prefix + '/'))
    .sort((a, b) => b.length - a.length)
}

async function waitExit (child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode != null || child.signalCode != null) return true
  return await new Promise<boolean>((resolve) => {
    const t = setTimeout(() => { resolve(false) }, ms)
    child.once('exit', () => { clearTimeout(t); resolve(true) })
  })
}

/**
 * Starts a private containerd (own config, root, state and socket in a temp dir), waiting until
 * its socket answers. Nothing is installed here: scripts/setup.sh installs containerd and runc.
 */
export async function startContainerd (options: StartContainerdOptions = {}): Promise<PrivateContainerd> {
  // short path: the socket path (plus ".ttrpc") must fit in sun_path (108 bytes)
  const dir = await mkdtemp(join(tmpdir(), 'ctrd-'))
  // shims put their sockets in /run/containerd/s whatever the config says: remove it at stop
  // only when this run created it
  const sharedRunDirs = ['/run/containerd/s', '/run/containerd'].filter(d => !existsSync(d))
  const address = join(dir, 'containerd.sock')
  const root = join(dir, 'root')
  const state = join(dir, 'state')
  const configPath = join(dir, 'config.toml')
  await writeFile(configPath, configToml(dir, address, options.proxyPlugins ?? {}))
  const logPath = join(dir, 'containerd.log')
  const logFd = openSync(logPath, 'a')
  const child = spawn('containerd', ['--config', configPath], { stdio: ['ignore', logFd, logFd] })
  closeSync(logFd)
  const client = ContainerdClient.create({ address })
  const log = async (): Promise<string> => await readFile(logPath, 'utf8').catch(() => '')

  const ctr = async (args: string[], o: { namespace?: string, timeoutMs?: number } = {}): Promise<string> => {
    try {
      // keep `ctr run`'s FIFOs and runc state in the temp dir instead of /run/containerd
      const full = args[0] === 'run' ? ['run', '--fifo-dir', join(dir, 'fifo'), '--runc-root', join(dir, 'runc'), ...args.slice(1)] : args
      const r = await run('ctr', ['--address', address, '--namespace', o.namespace ?? 'default', ...full], { timeout: o.timeoutMs ?? 120_000, maxBuffer: 1 << 26 })
      return r.stdout
    } catch (err) {
      const e = err as { stderr?: string, stdout?: string, message: string }
      throw new Error(`ctr ${args.join(' ')} failed: ${e.stderr ?? ''}${e.stdout ?? ''} (${e.message})`)
    }
  }

  let stopped = false
  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    client.close()
    if (child.exitCode == null && child.signalCode == null) {
      child.kill('SIGTERM')
      if (!await waitExit(child, 10_000)) {
        child.kill('SIGKILL')
        await waitExit(child, 5_000)
      }
    }
    await killShims(state)
    for (const m of await mountsUnder(dir)) {
      await run('umount', ['-R', m]).catch(async () => await run('umount', ['-l', m]).catch(() => {}))
    }
    await rm(dir, { recursive: true, force: true, maxRetries: 3 })
    for (const d of sharedRunDirs) await rmdir(d).catch(() => {}) // only if empty
  }

  try {
    const deadline = Date.now() + (options.startTimeoutMs ?? 30_000)
    for (;;) {
      if (child.exitCode != null) throw new Error(`containerd exited with ${child.exitCode}:\n${(await log()).slice(-4000)}`)
      if (existsSync(address)) {
        try {
          await client.ready(1000)
          await client.namespaces.list()
          break
        } catch { /* not yet serving */ }
      }
      if (Date.now() > deadline) throw new Error(`containerd did not answer on ${address}:\n${(await log()).slice(-4000)}`)
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  } catch (err) {
    await stop()
    throw err
  }
  return { dir, address, root, state, client, ctr, log, stop }
}

/**
 * Kills what a failed `ctr run` may leave under `state`: the containers' init processes first,
 * then their shims (which outlive containerd by design).
 */
async function killShims (state: string): Promise<void> {
  const tasksDir = join(state, 'io.containerd.runtime.v2.task')
  if (!existsSync(tasksDir)) return
  for (const name of ['init.pid', 'shim.pid']) {
    const { stdout } = await run('find', [tasksDir, '-maxdepth', '3', '-name', name]).catch(() => ({ stdout: '' }))
    for (const f of stdout.split('\n').filter(Boolean)) {
      const pid = Number((await readFile(f, 'utf8').catch(() => '')).trim())
      if (Number.isInteger(pid) && pid > 1) {
        try { process.kill(pid, 'SIGKILL') } catch { /* gone */ }
      }
    }
  }
}
