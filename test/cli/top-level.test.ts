import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildProgram } from '../../src/cli/program.js'
import { COMMAND_TABLE, DESCRIPTION, fastAnswer, topLevelProgram } from '../../src/cli/top-level.js'
import { cliPath, repoRoot } from '../../scripts/fixtures/tools.js'

const run = promisify(execFile)

describe('top-level help and version', () => {
  let dir: string
  let importHook: string

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'toplevel-'))
    // a resolve hook that records every module the process loads
    await writeFile(join(dir, 'hooks.mjs'), `import { appendFileSync } from 'node:fs'
export async function resolve (specifier, context, next) {
  const r = await next(specifier, context)
  appendFileSync(process.env.LOADED_LOG, r.url + '\\n')
  return r
}
`)
    importHook = join(dir, 'register.mjs')
    await writeFile(importHook, `import { register } from 'node:module'\nregister(${JSON.stringify(pathToFileURL(join(dir, 'hooks.mjs')).href)})\n`)
  })
  afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

  it('lists every registered command, in order, with the usage commander gives it', async () => {
    const program = await buildProgram([])
    const help = program.createHelp()
    const real = program.commands.map(c => help.subcommandTerm(c))
    expect(COMMAND_TABLE.map(([usage]) => usage)).toEqual(real)
    expect(program.description()).toBe(DESCRIPTION)
    expect(program.version()).toBe((await topLevelProgram()).version())
    // one line each at 80 columns
    for (const line of (await topLevelProgram()).helpInformation().split('\n')) expect(line.length).toBeLessThanOrEqual(80)
  })

  it('answers --help, -h, help, --version, -V and nothing at all; leaves everything else to the commands', async () => {
    const version = (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version
    expect(await fastAnswer(['--version'])).toEqual({ stdout: `${version}\n`, code: 0 })
    expect(await fastAnswer(['-V'])).toEqual({ stdout: `${version}\n`, code: 0 })
    for (const a of ['--help', '-h', 'help']) expect(await fastAnswer([a])).toMatchObject({ code: 0, stdout: expect.stringMatching(/^Usage: ipfs-estargz \[options\] \[command\]\n[\s\S]*\n {2}containerd-config \[options\] {9}print containerd's config for the node\n/) })
    expect(await fastAnswer([])).toMatchObject({ code: 2, stderr: expect.stringMatching(/^Usage: ipfs-estargz/) })
    expect(await fastAnswer(['push', '--help'])).toBeUndefined()
    expect(await fastAnswer(['help', 'push'])).toBeUndefined()
    expect(await fastAnswer(['--repo', 'x'])).toBeUndefined()
  })

  for (const args of [['--help'], ['--version']]) {
    it(`\`ipfs-estargz ${args[0]}\` loads no command module, nor the daemon client`, async () => {
      const log = join(dir, `loaded${args[0]}.txt`)
      const r = await run(process.execPath, ['--import', importHook, cliPath, ...args], { env: { ...process.env, LOADED_LOG: log } })
      expect(r.stdout).toMatch(args[0] === '--help' ? /^Usage: ipfs-estargz/ : /^\d+\.\d+\.\d+/)
      const loaded = (await readFile(log, 'utf8')).split('\n').filter(Boolean)
      expect(loaded.some(u => u.endsWith('/dist/cli/entry.js'))).toBe(true)
      expect(loaded.filter(u => /\/dist\/(cli\/(main|program)\.js|cli\/commands\/|daemon\/|ipfs\/)/.test(u))).toEqual([])
      expect(loaded.filter(u => u.includes('/node_modules/') && !(args[0] === '--help' && u.includes('/node_modules/commander/')))).toEqual([])
    })
  }

  it('a command\'s own help is the command\'s (the full description)', async () => {
    const r = await run(cliPath, ['push', '--help'])
    expect(r.stdout).toMatch(/^Usage: ipfs-estargz push \[options\] <source>\n\nconvert an image to eStargz and publish it to IPFS through the embedded Helia\nnode; prints the root CID\n/)
  })
})
