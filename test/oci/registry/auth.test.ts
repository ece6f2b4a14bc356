import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { basicAuthorization, loadDockerCredentials, parseChallenge } from '../../../src/oci/registry/auth.js'

describe('registry auth helpers', () => {
  let tmp: string
  beforeAll(async () => { tmp = await mkdtemp(join(tmpdir(), 'oci-auth-test-')) })
  afterAll(async () => { await rm(tmp, { recursive: true, force: true }) })

  it('parses Bearer and Basic challenges', () => {
    expect(parseChallenge('Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push"')).toEqual({
      scheme: 'bearer', params: { realm: 'https://auth.example.com/token', service: 'registry.example.com', scope: 'repository:a/b:pull,push' }
    })
    expect(parseChallenge('Basic realm="Registry Realm"')).toEqual({ scheme: 'basic', params: { realm: 'Registry Realm' } })
    expect(parseChallenge('Negotiate abc')).toBeUndefined()
    expect(parseChallenge(null)).toBeUndefined()
  })

  it('reads credentials from a Docker config file', async () => {
    const file = join(tmp, 'config.json')
    await writeFile(file, JSON.stringify({
      auths: {
        '127.0.0.1:5000': { auth: Buffer.from('alice:pa:ss').toString('base64') },
        'https://reg.example.com/v1/': { username: 'bob', password: 'pw' },
        'https://index.docker.io/v1/': { auth: Buffer.from('carol:x').toString('base64') }
      }
    }))
    expect(await loadDockerCredentials('127.0.0.1:5000', file)).toEqual({ username: 'alice', password: 'pa:ss' })
    expect(await loadDockerCredentials('reg.example.com', file)).toEqual({ username: 'bob', password: 'pw' })
    expect(await loadDockerCredentials('registry-1.docker.io', file)).toEqual({ username: 'carol', password: 'x' })
    expect(await loadDockerCredentials('other:1', file)).toBeUndefined()
    expect(await loadDockerCredentials('x', join(tmp, 'missing.json'))).toBeUndefined()
    expect(basicAuthorization({ username: 'a', password: 'b' })).toBe('Basic YTpi')
  })
})
