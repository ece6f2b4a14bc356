import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { sdNotifier } from '../../src/daemon/sd-notify.js'
import { FuseManagerClient } from '../../src/fusemgr/index.js'
import { startDaemon, type RunningDaemon } from '../../scripts/fixtures/daemon.js'
import { repoRoot } from '../../scripts/fixtures/tools.js'
import { until } from '../ipfs/helpers.js'
import { hasCommand, hasFuse, isRoot, needs } from '../helpers/env.js'

/** What systemd's side of `$NOTIFY_SOCKET` sees: a unix datagram socket (Node has none: python3 binds it). */
async function fakeNotifySocket (path: string): Promise<{ messages: string[], stop: () => void }> {
  const py = 'import socket, sys\ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint("bound", flush=True)\n' +
    'while True:\n  print(s.recv(65536).decode().replace("\\n", ";"), flush=True)\n'
  const child: ChildProcess = spawn('python3', ['-c', py, path], { stdio: ['ignore', 'pipe', 'inherit'] })
  const messages: string[] = []
  let buf = ''
  await new Promise<void>((resolve, reject) => {
    child.on('exit', (code) => reject(new Error(`the fake notify socket exited with ${String(code)}`)))
    child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString()
      const lines = buf.split('\n')
      buf = lines.pop() ?? ''
      for (const l of lines) l === 'bound' ? resolve() : messages.push(l)
    })
  })
  return { messages, stop: () => { child.kill('SIGKILL') } }
}

describe('sdNotifier', () => {
  it('does nothing without $NOTIFY_SOCKET', async () => {
    delete process.env.NOTIFY_SOCKET
    const warnings: unknown[] = []
    const n = sdNotifier({ logger: { warn: (o: unknown) => warnings.push(o) } as never }, { command: '/nonexistent/systemd-notify' })
    expect(await n.ready('x')).toBe(false)
    expect(warnings).toEqual([])
  })

  it('takes the socket out of the environment, and logs a notifier that cannot run', async () => {
    process.env.NOTIFY_SOCKET = '/tmp/nowhere.sock'
    const warnings: unknown[] = []
    const n = sdNotifier({ logger: { warn: (o: unknown) => warnings.push(o) } as never }, { command: '/nonexistent/systemd-notify' })
    expect(process.env.NOTIFY_SOCKET).toBeUndefined()
    expect(await n.ready('x')).toBe(false)
    expect(warnings).toMatchObject([{ command: '/nonexistent/systemd-notify' }])
  })
})

describe.skipIf(needs({ root: isRoot, fuse: hasFuse, python3: hasCommand('python3'), 'systemd-notify': hasCommand('systemd-notify') }))('the daemon under Type=notify', () => {
  let dir: string
  let daemon: RunningDaemon | undefined
  let socket: Awaited<ReturnType<typeof fakeNotifySocket>> | undefined

  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'sdnotify-')) })
  afterAll(async () => {
    await daemon?.stop()
    socket?.stop()
    await rm(dir, { recursive: true, force: true })
  }, 60_000)

  it('sends READY=1 with its pid once it serves, keeps the socket from its children, and STOPPING=1 on SIGTERM', async () => {
    socket = await fakeNotifySocket(join(dir, 'notify.sock'))
    daemon = await startDaemon({ root: join(dir, 'node'), listen: ['/ip4/127.0.0.1/tcp/0'], env: { NOTIFY_SOCKET: join(dir, 'notify.sock') } })
    await until(() => socket!.messages.some(m => m.includes('READY=1')), 'READY=1', 30_000)
    const ready = socket.messages.find(m => m.includes('READY=1'))!
    expect(ready.split(';')).toEqual(expect.arrayContaining(['READY=1', `MAINPID=${daemon.proc.pid}`, `STATUS=serving: snapshotter on ${daemon.address}`]))
    // the FUSE manager the daemon started does not have the socket
    const managerPid = (await new FuseManagerClient(join(daemon.root, 'fuse-manager.sock')).health(AbortSignal.timeout(10_000))).pid
    expect(managerPid).not.toBe(daemon.proc.pid)
    expect((await readFile(`/proc/${managerPid}/environ`, 'utf8')).split('\0').filter(v => v.startsWith('NOTIFY_SOCKET='))).toEqual([])
    await daemon.stop()
    daemon = undefined
    expect(socket.messages.some(m => m.split(';').includes('STOPPING=1'))).toBe(true)
  }, 120_000)

  it('the shipped unit is Type=notify with NotifyAccess=all, KillMode=process, after the network and before containerd', async () => {
    const unit = await readFile(join(repoRoot, 'scripts', 'systemd', 'ipfs-estargz.service'), 'utf8')
    const keys = unit.split('\n').filter(l => /^\w+=/.test(l))
    expect(keys).toEqual(expect.arrayContaining(['Type=notify', 'NotifyAccess=all', 'KillMode=process', 'After=network-online.target', 'Wants=network-online.target', 'Before=containerd.service']))
  })
})
