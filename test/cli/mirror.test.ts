import { spawnSync } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { silentLogger } from '../../src/logging.js'
import { BasicAuth } from '../../src/mirror/index.js'
import { cliPath } from '../../scripts/fixtures/tools.js'

function cli (args: string[], input?: string): { code: number, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', input })
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr }
}

describe('mirror commands: tag, mirror passwd, containerd-config --mirror', () => {
  let dir: string
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'cli-mirror-')) })
  afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

  it('tag refuses names and tags outside the registry grammar, and names under ipfs/ (usage, exit 2)', () => {
    const cid = 'bafybeicrdnk6exnpnsn3pfvp4bn33v2k4fhafydc5prpuevtkkqbsad2em'
    for (const bad of ['Upper/case:1', 'a//b:1', 'ok/name:-bad', `ipfs/${cid}:latest`, 'name:' + 'x'.repeat(200)]) {
      const r = cli(['tag', cid, bad, '--repo', join(dir, 'repo')])
      expect(r.code, bad).toBe(2)
      expect(r.stderr).toMatch(/is not a repository name|is not a tag|are the CIDs themselves/)
    }
  })

  it('tag refuses an image the repo does not list (ERR_IMAGE_NOT_LISTED) and leaves no tag', () => {
    const r = cli(['tag', 'bafybeicrdnk6exnpnsn3pfvp4bn33v2k4fhafydc5prpuevtkkqbsad2em', 'library/x:1', '--repo', join(dir, 'repo')])
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/ERR_IMAGE_NOT_LISTED/)
    const del = cli(['tag', '--delete', 'library/x:1', '--repo', join(dir, 'repo')])
    expect(del.code).toBe(2)
  })

  it('mirror passwd prints a credentials line the mirror accepts for that password only', async () => {
    const r = cli(['mirror', 'passwd', 'alice'], 'correct horse\n')
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/^alice:\$scrypt\$/)
    expect(r.stdout).not.toContain('correct horse')
    const file = join(dir, 'users')
    await writeFile(file, r.stdout, { mode: 0o600 })
    const auth = await BasicAuth.load(file, silentLogger())
    const basic = (p: string): string => `Basic ${Buffer.from(`alice:${p}`).toString('base64')}`
    expect(await auth.check(basic('correct horse'))).toBe('alice')
    expect(await auth.check(basic('correct horse '))).toBeUndefined()
    expect(cli(['mirror', 'passwd', 'alice'], '').code).toBe(2)
  })

  it('containerd-config --mirror prints the hosts.toml for the mirror, or for an upstream it fronts', () => {
    const own = cli(['containerd-config', '--mirror', '--address', '127.0.0.1:6000'])
    expect(own.stdout).toContain('# /etc/containerd/certs.d/127.0.0.1:6000/hosts.toml')
    expect(own.stdout).toContain('server = "http://127.0.0.1:6000"')
    expect(own.stdout).toContain('[host."http://127.0.0.1:6000"]\n  capabilities = ["pull", "resolve"]')
    const up = cli(['containerd-config', '--mirror', '--upstream', 'docker.io'])
    expect(up.stdout).toContain('# /etc/containerd/certs.d/docker.io/hosts.toml')
    expect(up.stdout).toContain('server = "https://registry-1.docker.io"')
    expect(up.stdout).toContain('[host."http://127.0.0.1:5380"]')
    expect(cli(['containerd-config', '--mirror', '--address', 'nope']).code).toBe(1)
  })
})
