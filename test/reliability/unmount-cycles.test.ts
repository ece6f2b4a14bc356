/**
 * A process serving FUSE mounts (as the FUSE manager does) mounts, reads and unmounts layers
 * over and over. Before the unmount helper, each unmount's `fusermount` child exited as its
 * session ended, and now and then its SIGCHLD was handled on a libfuse worker thread being
 * cancelled: libuv's signal lock went with the thread and the process's main thread blocked for
 * good (in a read of libuv's lock pipe, every signal blocked) with all its mounts. Measured
 * here, runs of 600 cycles of 4 layers: without the helper 2 of 5 hung (after 61 and 173
 * cycles); with it, 0 of 8. A hang is reported with the main thread's kernel wait and signal mask.
 */
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fuseMountsUnder, unmountUnder } from '../../src/fs/mountinfo.js'
import { hasCommand, hasFuse, isRoot, needs } from '../helpers/env.js'
import { helloLayer, removeDir, tempDir } from '../fs/helpers.js'
import { cases, record } from './harness.js'

const CHILD = fileURLToPath(new URL('../fs/unmount-cycles-child.ts', import.meta.url))
/** A cycle of 4 mounts takes ~40 ms here: a child that prints nothing for this long is stuck. */
const STALL_MS = 30_000

describe.skipIf(needs({ root: isRoot, fuse: hasFuse, fusermount: hasCommand('fusermount') }))('FUSE sessions ending in a process that serves mounts', () => {
  let dir: string
  let blob: string
  let tocDigest: string

  beforeAll(async () => {
    dir = await tempDir('unmount-cycles')
    ;({ blob, tocDigest } = await helloLayer(dir))
  })

  afterAll(async () => {
    await unmountUnder(dir)
    await removeDir(dir)
  })

  it('mount, read and unmount cycles never block the serving process', async () => {
    const cycles = cases(150, 1500)
    const layers = 4
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, blob, tocDigest, join(dir, 'run'), String(cycles), String(layers)], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    let last = Date.now()
    child.stdout.setEncoding('utf8').on('data', (s: string) => { out += s; last = Date.now() })
    child.stderr.setEncoding('utf8').on('data', (s: string) => { err += s })
    const exited = new Promise<number | null>(resolve => child.once('exit', code => { resolve(code) }))
    let stuck: string | undefined
    const watch = setInterval(() => {
      if (Date.now() - last < STALL_MS || child.pid == null) return
      const status = readFileSync(`/proc/${child.pid}/status`, 'utf8')
      stuck = `no progress for ${STALL_MS} ms after ${out.trim().split('\n').pop() ?? 'nothing'}: main thread waits in ` +
        `${readFileSync(`/proc/${child.pid}/wchan`, 'utf8')}, ${/SigBlk:\s*(\S+)/.exec(status)?.[0] ?? ''}`
      child.kill('SIGKILL')
    }, 1000)
    const code = await exited.finally(() => { clearInterval(watch) })
    expect(stuck, stuck).toBeUndefined()
    expect(code, err).toBe(0)
    expect(out).toContain(`cycle ${cycles}\n`)
    expect(out).toContain(`detached by the helper: ${cycles * layers}\n`)
    expect(await fuseMountsUnder(join(dir, 'run'))).toEqual([])
    record({ kind: 'fault', fault: 'FUSE sessions ended in a process serving mounts (mount, read, unmount cycles)', injected: cycles * layers, survived: cycles * layers })
  }, 1_800_000) // bounded by the stall watch: a run of 1500 cycles takes about a minute
})
