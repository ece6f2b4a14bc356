import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseRecord, type RecordEntry } from '../../src/optimize/index.js'
import { hasCommand, hasFuse, isRoot, needs } from '../helpers/env.js'
import { cliPath, esgzRef } from '../../scripts/fixtures/tools.js'
import { cli, layerToc, layoutLayers, layoutManifest, mountsUnder, processesRunning, writeSmallImage, type SmallImage } from './helpers.js'

interface OptimizeJson {
  root?: string
  run?: { exitCode: number | null, signal: string | null, stopped: boolean }
  recorded: number
  images: Array<{ layers: Array<{ digest: string, source: string, reused: boolean, landmark: string, prioritizedFiles: number }> }>
}

const FAST = ['--level', '1']

describe.skipIf(needs({ root: isRoot, fuse: hasFuse, unshare: hasCommand('unshare'), ldd: hasCommand('ldd'), go: hasCommand('go') }))('ipfs-estargz optimize (a small image of this machine\'s dash, real sandbox)', () => {
  let dir: string
  let tmp: string
  let img: SmallImage
  /** Every optimize gets its own TMPDIR, so the test can see that nothing is left there. */
  const optimize = async (args: string[], opts: { cwd?: string } = {}): ReturnType<typeof cli> => await cli(['optimize', ...args], { env: { TMPDIR: tmp, IPFS_ESTARGZ_PATH: join(dir, 'no-repo') }, cwd: opts.cwd })

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'optimize-'))
    tmp = join(dir, 'tmp')
    await mkdir(tmp)
    img = await writeSmallImage(dir)
  })
  afterAll(async () => {
    await new Promise(resolve => setTimeout(resolve, 1500)) // Helia writes its peer record after stop
    await rm(dir, { recursive: true, force: true })
  })
  const leftNothing = (): void => {
    expect(readdirSync(tmp)).toEqual([])
    expect(mountsUnder(tmp)).toEqual([])
  }

  it('runs the image\'s workload, records its first accesses per layer, and puts them first in their layers, then .prefetch.landmark', async () => {
    const out = join(dir, 'o1')
    const r = await optimize([`oci:${img.layout}`, '--repo', join(dir, 'repo'), '--output', `oci:${out}`, '--record-out', join(dir, 'o1.rec'), '--json', ...FAST])
    expect(r.code, r.stderr).toBe(0)
    // the workload ran (its output goes to stderr) and exited by itself
    expect(r.stderr).toContain('got hello')
    expect(r.stderr).toMatch(/the workload exited after [\d.]+ s with code 0; it read 4 files \(layer 0: 2, layer 1: 2\)/)
    const json = JSON.parse(r.stdout) as OptimizeJson
    expect(json.root).toMatch(/^baf/)
    expect(json.run).toMatchObject({ exitCode: 0, stopped: false })
    const record = parseRecord(await readFile(join(dir, 'o1.rec'), 'utf8'))
    expect(record.every(e => e.manifestDigest === img.manifestDigest)).toBe(true)
    // the kernel execs /bin/sh, the loader, which loads libc; then the script reads etc/app.conf
    const loader = img.libs.find(l => l.includes('ld-linux')) ?? ''
    const libc = img.libs.find(l => l.includes('libc.so')) ?? ''
    expect(record.map(e => `${e.layerIndex}:${e.path}`)).toEqual([`1:bin/sh`, `0:${loader}`, `0:${libc}`, '1:etc/app.conf'])
    expect(json.images[0].layers.map(l => [l.source, l.landmark, l.prioritizedFiles])).toEqual([[img.layers[0], 'prefetch', 2], [img.layers[1], 'prefetch', 2], [img.layers[2], 'no-prefetch', 0]])
    const layers = layoutLayers(out)
    const tocs = await Promise.all(layers.map(layerToc))
    expect(tocs[0].prioritized).toEqual([loader, libc])
    expect(tocs[1].prioritized).toEqual(['bin/sh', 'etc/app.conf'])
    expect(tocs[2].prioritized).toBeUndefined()
    expect(tocs[2].noPrefetch).toBe(true)
    for (const l of layers) {
      const v = spawnSync(esgzRef(), ['verify', l.path, l.tocDigest], { encoding: 'utf8' })
      expect(v.status, v.stderr).toBe(0)
    }
    leftNothing()
  })

  it('stops a workload at the end of --period, with every process it started (also as another user, who loses unshare\'s parent-death signal)', async () => {
    const sleeper = ['/bin/sleep', '4242.5']
    const child = ['/bin/sleep', '4242.6']
    const script = `read x < /etc/app.conf; ${child.join(' ')} & exec ${sleeper.join(' ')}`
    const r = await optimize([`oci:${img.layout}`, '--no-ipfs', '--output', `oci:${join(dir, 'o2')}`, '--entrypoint', JSON.stringify(['/bin/sh', '-c', script]), '--user', '4242', '--period', '1', '--record-out', join(dir, 'o2.rec'), '--json', ...FAST])
    expect(r.code, r.stderr).toBe(0)
    expect((JSON.parse(r.stdout) as OptimizeJson).run).toMatchObject({ stopped: true, exitCode: null })
    expect(r.stderr).toMatch(/the workload was stopped after 1\.\d s/)
    expect(processesRunning(sleeper)).toEqual([])
    expect(processesRunning(child)).toEqual([])
    leftNothing()
  })

  it.each(['runc', 'namespaces'])('--sandbox %s: the workload may write (thrown away), runs as --user with a fresh /proc, and has no network interface but loopback', async (sandbox) => {
    const script = [
      'echo changed > /etc/app.conf && read x < /etc/app.conf && echo "now $x"',
      'while read k v rest; do [ "$k" = Uid: ] && echo "uid $v"; [ "$k" = CapEff: ] && echo "caps $v"; done < /proc/self/status',
      'while read l; do echo "net $l"; done < /proc/net/dev',
      'for f in /dev/*; do echo "dev $f"; done'
    ].join('; ')
    const r = await optimize([`oci:${img.layout}`, '--no-ipfs', '--output', `oci:${join(dir, `o3-${sandbox}`)}`, '--sandbox', sandbox, '--json', '--entrypoint', JSON.stringify(['/bin/sh', '-c', script]), ...FAST])
    expect(r.code, r.stderr).toBe(0)
    expect((JSON.parse(r.stdout) as { run: { sandbox: string } }).run.sandbox).toBe(sandbox)
    expect(r.stderr).toContain('now changed')
    expect(r.stderr).toContain('uid 0')
    const ifaces = [...r.stderr.matchAll(/^net\s+(\S+):/gm)].map(m => m[1])
    expect(ifaces).toEqual(['lo'])
    // only these devices, and nothing else of the host's /dev
    const devs = [...r.stderr.matchAll(/^dev (\S+)$/gm)].map(m => m[1])
    const base = ['/dev/fd', '/dev/full', '/dev/null', '/dev/pts', '/dev/random', '/dev/shm', '/dev/stderr', '/dev/stdin', '/dev/stdout', '/dev/tty', '/dev/urandom', '/dev/zero']
    expect(devs).toEqual(sandbox === 'runc' ? [...base, '/dev/mqueue', '/dev/ptmx'].sort() : base)
    // runc: containerd's default capabilities for root, not all of them
    if (sandbox === 'runc') expect(r.stderr).toMatch(/^caps 00000000a80425fb$/m)
    const asUser = await optimize([`oci:${img.layout}`, '--no-ipfs', '--output', `oci:${join(dir, `o3u-${sandbox}`)}`, '--sandbox', sandbox, '--user', '4242:4243', '--entrypoint', JSON.stringify(['/bin/sh', '-c', 'while read k a b; do [ "$k" = Uid: ] && echo "uid $a"; [ "$k" = Gid: ] && echo "gid $a"; done < /proc/self/status']), ...FAST])
    expect(asUser.code, asUser.stderr).toBe(0)
    expect(asUser.stderr).toContain('uid 4242')
    expect(asUser.stderr).toContain('gid 4243')
    // the source layout is untouched
    expect(await readFile(join(img.layout, 'index.json'), 'utf8')).toContain(img.manifestDigest)
    leftNothing()
  })

  it.each(['runc', 'namespaces'])('--sandbox %s: an image whose /dev and /proc are symlinks out of it still runs, and nothing is mounted or written through them on the host', async (sandbox) => {
    const target = join(dir, `host-target-${sandbox}`)
    await mkdir(target)
    const evil = await writeSmallImage(dir, { name: `evil-${sandbox}`, extraLayer: [{ name: 'dev', type: 'symlink', linkName: target }, { name: 'proc', type: 'symlink', linkName: target }, { name: 'sys', type: 'symlink', linkName: target }] })
    const r = await optimize([`oci:${evil.layout}`, '--no-ipfs', '--output', `oci:${join(dir, `o-evil-${sandbox}`)}`, '--sandbox', sandbox, '--entrypoint', JSON.stringify(['/bin/sh', '-c', 'read x < /etc/app.conf; echo "got $x" > /dev/null && echo fine']), ...FAST])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toContain('fine')
    expect(readdirSync(target)).toEqual([])
    expect(mountsUnder(target)).toEqual([])
    leftNothing()
  })

  it('replays a record in ctr-remote\'s format instead of running: each layer gets exactly its paths, in the record\'s order', async () => {
    const libc = img.libs.find(l => l.includes('libc.so')) ?? ''
    const loader = img.libs.find(l => l.includes('ld-linux')) ?? ''
    const entries: RecordEntry[] = [
      { path: libc, manifestDigest: img.manifestDigest, layerIndex: 0 },
      { path: 'etc/other.conf', manifestDigest: img.manifestDigest, layerIndex: 1 },
      { path: 'data/untouched.txt', manifestDigest: 'sha256:' + '1'.repeat(64), layerIndex: 9 }, // another image's: skipped
      { path: loader, manifestDigest: img.manifestDigest, layerIndex: 0 },
      { path: 'etc/other.conf', manifestDigest: img.manifestDigest, layerIndex: 1 }
    ]
    // byte for byte what ctr-remote writes: compact JSON, path/manifestDigest/layerIndex
    await writeFile(join(dir, 'in.rec'), entries.map(e => `{"path":"${e.path}","manifestDigest":"${e.manifestDigest}","layerIndex":${e.layerIndex}}\n`).join(''))
    const r = await optimize([`oci:${img.layout}`, '--no-ipfs', '--output', `oci:${join(dir, 'o4')}`, '--record-in', join(dir, 'in.rec'), '--json', ...FAST])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).not.toContain('got hello') // nothing ran
    expect(r.stderr).toContain('prioritized 3 files (layer 0: 2, layer 1: 1)')
    const tocs = await Promise.all(layoutLayers(join(dir, 'o4')).map(layerToc))
    expect(tocs.map(t => t.prioritized)).toEqual([[libc, loader], ['etc/other.conf'], undefined])
    leftNothing()
  })

  it('turns a prefetch list of paths and globs into the layers\' prioritized files (whiteouts respected)', async () => {
    await writeFile(join(dir, 'list'), '# what the app reads\n/etc/*.conf\nbin/sh\nlib*/**\nnothing/**\n')
    const r = await optimize([`oci:${img.layout}`, '--no-ipfs', '--output', `oci:${join(dir, 'o5')}`, '--prefetch-list', join(dir, 'list'), '--record-out', join(dir, 'o5.rec'), ...FAST])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toContain('line 5: "nothing/**" matches no file')
    const record = parseRecord(await readFile(join(dir, 'o5.rec'), 'utf8'))
    const libs = [...img.libs].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
    // etc/unused.conf is whited out by layer 2
    expect(record.map(e => `${e.layerIndex}:${e.path}`)).toEqual(['1:etc/app.conf', '1:etc/other.conf', '1:bin/sh', ...libs.map(l => `0:${l}`)])
    const tocs = await Promise.all(layoutLayers(join(dir, 'o5')).map(layerToc))
    expect(tocs.map(t => t.prioritized)).toEqual([libs, ['etc/app.conf', 'etc/other.conf', 'bin/sh'], undefined])
    leftNothing()
  })

  it('on an optimized image: an untouched layer with a .prefetch.landmark is rebuilt without, one with .no.prefetch.landmark is kept as it is', async () => {
    const src = join(dir, 'o1')
    const before = layoutLayers(src)
    const libc = img.libs.find(l => l.includes('libc.so')) ?? ''
    await writeFile(join(dir, 'again.rec'), JSON.stringify({ path: libc, manifestDigest: layoutManifest(src), layerIndex: 0 }) + '\n')
    const r = await optimize([`oci:${src}`, '--no-ipfs', '--output', `oci:${join(dir, 'o6')}`, '--record-in', join(dir, 'again.rec'), '--json', ...FAST])
    expect(r.code, r.stderr).toBe(0)
    const layers = (JSON.parse(r.stdout) as OptimizeJson).images[0].layers
    expect(layers.map(l => [l.landmark, l.reused])).toEqual([['prefetch', false], ['no-prefetch', false], ['no-prefetch', true]])
    expect(layers[2].digest).toBe(before[2].digest)
    const tocs = await Promise.all(layoutLayers(join(dir, 'o6')).map(layerToc))
    expect(tocs[0].prioritized).toEqual([libc])
    expect(tocs[1].noPrefetch).toBe(true)
    leftNothing()
  })

  it.runIf(hasCommand('script')())('the workload does not get the caller\'s terminal', () => {
    // script(1) runs the CLI with a pseudo-terminal as its controlling terminal
    const args = ['optimize', `oci:${img.layout}`, '--no-ipfs', '--output', `oci:${join(dir, 'o8')}`, '--entrypoint', JSON.stringify(['/bin/sh', '-c', 'read x < /etc/app.conf; if echo hi > /dev/tty; then echo TTY-OPENED; else echo NO-TTY; fi']), ...FAST]
    const quoted = [process.execPath, cliPath, ...args].map(a => `'${a.replace(/'/g, `'\\''`)}'`).join(' ')
    const r = spawnSync('script', ['-qec', `TMPDIR=${tmp} ${quoted}`, '/dev/null'], { encoding: 'utf8', timeout: 300_000 })
    expect(r.status, r.stdout + r.stderr).toBe(0)
    expect(r.stdout).toContain('NO-TTY')
    expect(r.stdout).not.toContain('TTY-OPENED')
    leftNothing()
  })

  it('Ctrl-C (SIGINT to the whole process group) stops the workload and leaves nothing behind', async () => {
    const sleeper = ['/bin/sleep', '4242.7']
    const child = spawn(process.execPath, [cliPath, 'optimize', `oci:${img.layout}`, '--no-ipfs', '--output', `oci:${join(dir, 'o7')}`, '--entrypoint', JSON.stringify(sleeper), '--args', '[]', '--period', '600', ...FAST],
      { detached: true, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, TMPDIR: tmp } })
    let stderr = ''
    child.stderr?.on('data', (b: Buffer) => { stderr += b.toString() })
    const code = new Promise<number | null>(resolve => child.once('exit', c => resolve(c)))
    for (let i = 0; i < 600 && processesRunning(sleeper).length === 0; i++) await new Promise(resolve => setTimeout(resolve, 100))
    expect(processesRunning(sleeper)).toHaveLength(1)
    process.kill(-(child.pid ?? 0), 'SIGINT')
    expect(await code).toBe(1)
    // (the killed sandbox may say something first: its output is the caller's)
    expect(stderr.trim().split('\n').pop()).toBe('ipfs-estargz: This operation was aborted')
    expect(processesRunning(sleeper)).toEqual([])
    expect(existsSync(join(dir, 'o7', 'index.json'))).toBe(false)
    leftNothing()
  })

  it('bad input fails with one clear line and its code, and leaves no image, mount or temp file', async () => {
    const out = join(dir, 'bad-out')
    await writeFile(join(dir, 'bad.rec'), '{"path":"bin/sh","manifestDigest":"sha256:' + 'a'.repeat(64) + '","layerIndex":0}\n{oops\n')
    let r = await optimize([`oci:${img.layout}`, '--no-ipfs', '--output', `oci:${out}`, '--record-in', join(dir, 'bad.rec')])
    expect([r.code, r.stderr.trim()]).toEqual([1, `ipfs-estargz: ${join(dir, 'bad.rec')} line 2: not JSON (ERR_BAD_RECORD)`])
    await writeFile(join(dir, 'other.rec'), '{"path":"bin/sh","manifestDigest":"sha256:' + 'a'.repeat(64) + '","layerIndex":1}\n')
    r = await optimize([`oci:${img.layout}`, '--repo', join(dir, 'bad-repo'), '--output', `oci:${out}`, '--record-in', join(dir, 'other.rec')])
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/the record is for manifest sha256:a{64}, not for the source's .*\(ERR_RECORD_MISMATCH\)/)
    expect(existsSync(join(out, 'index.json'))).toBe(false)
    expect((await cli(['image', 'ls', '--repo', join(dir, 'bad-repo')])).stdout.trim()).toBe('')
    await writeFile(join(dir, 'missing.rec'), JSON.stringify({ path: 'no/such/file', manifestDigest: img.manifestDigest, layerIndex: 1 }) + '\n')
    r = await optimize([`oci:${img.layout}`, '--no-ipfs', '--output', `oci:${out}`, '--record-in', join(dir, 'missing.rec')])
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/prioritized file "no\/such\/file" is not in the layer \(ERR_PRIORITIZED_FILE_NOT_FOUND\)/)
    r = await optimize([`oci:${img.layout}`, '--no-ipfs', '--output', `oci:${out}`, '--entrypoint', '["/no/such/binary"]', ...FAST])
    expect(r.code).toBe(1)
    // the shell of the namespaces sandbox says 127, runc says 1; both say why
    expect(r.stderr).toMatch(/the workload opened no file of the image \(it exited with code (127|1);.*\(ERR_NOTHING_RECORDED\)/)
    expect(r.stderr).toContain('/no/such/binary')
    r = await optimize([`oci:${img.layout}`, '--no-ipfs', '--output', `oci:${out}`, '--user', 'nobody', ...FAST])
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/user "nobody" is not in the image's \/etc\/passwd \(ERR_UNKNOWN_USER\)/)
    expect(existsSync(join(out, 'index.json'))).toBe(false)
    // usage errors: exit 2
    for (const args of [['--record-in', join(dir, 'other.rec'), '--entrypoint', '["sh"]'], ['--record-in', 'a', '--prefetch-list', 'b'], ['--period', '0'], ['--entrypoint', 'sh'], ['--cwd', 'rel']]) {
      r = await optimize([`oci:${img.layout}`, '--no-ipfs', '--output', `oci:${out}`, ...args])
      expect(r.code, args.join(' ')).toBe(2)
    }
    leftNothing()
  })
})
