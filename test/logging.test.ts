import { spawnSync } from 'node:child_process'
import { describe, expect, it } from 'vitest'
import { logFormat, prettyLine } from '../src/logging.js'
import { hasCommand, needs } from './helpers/env.js'

/** A script that logs three lines through the built logger: one names another process's pid. */
const SCRIPT = `
const { createLogger } = await import(${JSON.stringify(new URL('../dist/logging.js', import.meta.url).pathname)})
const log = createLogger('info')
log.info({ pid: 1, socket: '/s' }, 'started the FUSE manager')
log.child({ component: 'x', pid: 2 }).warn('falling back')
log.info('plain')
log.child({ a: 1 }).child({ b: 2, pid: 3 }).info('nested')
`

function run (env: NodeJS.ProcessEnv = {}): { stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', SCRIPT], { encoding: 'utf8', env: { ...process.env, IPFS_ESTARGZ_LOG_FORMAT: '', ...env } })
  if (r.status !== 0) throw new Error(r.stderr)
  return { stdout: r.stdout, stderr: r.stderr }
}

describe('logging', () => {
  it('writes JSON lines when stderr is not a terminal, each with exactly one pid (its own)', () => {
    const lines = run().stderr.trim().split('\n')
    expect(lines).toHaveLength(4)
    for (const line of lines) expect(line.match(/"pid":/g), line).toHaveLength(1)
    const [first, second] = lines.map(l => JSON.parse(l) as Record<string, unknown>)
    expect(first).toMatchObject({ otherPid: 1, socket: '/s', msg: 'started the FUSE manager' })
    expect(first.pid).not.toBe(1)
    expect(second).toMatchObject({ otherPid: 2, component: 'x', level: 40 })
    expect(JSON.parse(lines[3])).toMatchObject({ a: 1, b: 2, otherPid: 3, msg: 'nested' })
  })

  it('writes readable lines when asked, and JSON when asked on a terminal', () => {
    const pretty = run({ IPFS_ESTARGZ_LOG_FORMAT: 'pretty' }).stderr.trim().split('\n')
    expect(pretty[0]).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO  started the FUSE manager {2}socket=\/s otherPid=1$/)
    expect(pretty[1]).toMatch(/^\S+ WARN  falling back {2}component=x otherPid=2$/)
    expect(logFormat({ IPFS_ESTARGZ_LOG_FORMAT: 'json' }, true)).toBe('json')
    expect(logFormat({}, true)).toBe('pretty')
    expect(logFormat({}, false)).toBe('json')
  })

  it.skipIf(needs({ script: hasCommand('script') }))('is pretty on a real terminal (a pty from script(1))', () => {
    const r = spawnSync('script', ['-qec', `${process.execPath} --input-type=module -e "$LOG_SCRIPT"`, '/dev/null'], { encoding: 'utf8', env: { ...process.env, IPFS_ESTARGZ_LOG_FORMAT: '', LOG_SCRIPT: SCRIPT } })
    expect(r.status, r.stderr).toBe(0)
    const out = r.stdout.replace(/\r/g, '')
    expect(out).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO  started the FUSE manager/m)
    expect(out).not.toContain('"level"')
  })

  it('shows values that need quoting as JSON, and a line that is not JSON as it is', () => {
    expect(prettyLine(JSON.stringify({ level: 50, time: 0, pid: 9, msg: 'm', err: 'two words', n: 3, o: { a: 1 } })))
      .toBe('00:00:00.000 ERROR m  err="two words" n=3 o={"a":1}\n')
    expect(prettyLine('not json')).toBe('not json\n')
  })
})
