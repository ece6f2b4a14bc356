import { spawn } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { describe, expect, it } from 'vitest'
import { containerdNeeds } from '../../scripts/fixtures/containerd.js'
import { repoRoot } from '../../scripts/fixtures/tools.js'
import { hasFuse, needs } from '../helpers/env.js'

const demoDirs = (): string[] => readdirSync(tmpdir()).filter(n => n.startsWith('ipfs-estargz-demo-'))

/**
 * `npm run demo` as a newcomer runs it (scripts/demo.sh: setup, then the demo), in its
 * project-files mode: the Debian image takes minutes to build on a cold cache, more than the
 * suite's budget; `npm run demo` picks Debian by itself where debootstrap is installed.
 */
describe.skipIf(needs({ ...containerdNeeds, fuse: hasFuse }))('npm run demo', () => {
  it('two nodes, a lazy mount from the peer, bytes by source, a container run through the snapshotter: tables, exit 0, nothing left', async () => {
    const before = demoDirs()
    const child = spawn('bash', ['scripts/demo.sh', '--image', 'project'], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.setEncoding('utf8').on('data', (s: string) => { out += s })
    child.stderr.setEncoding('utf8').on('data', (s: string) => { err += s })
    const code = await new Promise<number | null>(resolve => child.on('exit', resolve))
    expect(code, `${out}\n${err}`).toBe(0)
    for (const n of [1, 2, 3, 4, 5]) expect(out).toContain(`\n== ${n}. `)
    // human-readable tables, not JSON lines
    expect(out.split('\n').filter(l => l.trim().startsWith('{'))).toEqual([])
    expect(out).toMatch(/FILE READ ON B +SIZE +FIRST READ +AGAIN +CONTENT/)
    expect(out.match(/identical to the source/g)?.length).toBe(3)
    expect(out).toMatch(/SOURCE +BYTES +BLOCKS +OF THE IMAGE/)
    // the mount fetched a small share of the image, from the peer
    const share = Number(/fetched over the network +\S+ \S+ +([\d.]+) %/.exec(out)?.[1])
    expect(share).toBeGreaterThan(0)
    expect(share).toBeLessThan(50)
    expect(out.match(/lazy \(remote snapshot\)/g)?.length).toBe(2)
    expect(out).toContain('| hello from a container on lazy layers')
    expect(out).toContain('| # ipfs-estargz')
    expect(demoDirs().filter(n => !before.includes(n))).toEqual([])
  }, 300_000)
})
