import { describe, expect, it } from 'vitest'
import { NoWorkloadError, UnknownUserError, resolveUser, withHome, workloadOf } from '../../src/optimize/index.js'

describe('workload', () => {
  const config = { Entrypoint: ['/entry'], Cmd: ['serve', '--port', '80'], Env: ['PATH=/bin', 'A=1', 'B=2'], WorkingDir: '/app', User: 'app' }

  it('is the config\'s, each part replaced by its override (as ctr-remote: --entrypoint keeps Cmd, --args replaces it)', () => {
    expect(workloadOf(config)).toEqual({ args: ['/entry', 'serve', '--port', '80'], env: ['PATH=/bin', 'A=1', 'B=2'], cwd: '/app', user: 'app' })
    expect(workloadOf(config, { entrypoint: ['python3'] }).args).toEqual(['python3', 'serve', '--port', '80'])
    expect(workloadOf(config, { args: ['-c', 'x'] }).args).toEqual(['/entry', '-c', 'x'])
    expect(workloadOf(config, { env: ['A=9', 'B', 'C=3'], cwd: '/', user: '0' })).toMatchObject({ env: ['PATH=/bin', 'A=9', 'C=3'], cwd: '/', user: '0' })
    expect(workloadOf({ Cmd: ['sh'] })).toEqual({ args: ['sh'], env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], cwd: '/', user: '' })
  })

  it('refuses an image with nothing to run, and a relative working directory', () => {
    expect(() => workloadOf({ Env: [] })).toThrow(NoWorkloadError)
    expect(() => workloadOf({ Cmd: ['sh'] }, { cwd: 'app' })).toThrow(/absolute/)
  })

  it('resolves users and groups by number or from the image\'s passwd and group, and sets HOME', () => {
    const passwd = 'root:x:0:0:root:/root:/bin/bash\napp:x:1000:1001::/home/app:/bin/sh\nbroken\n'
    const group = 'root:x:0:\nstaff:x:50:\n'
    expect(resolveUser('', passwd, group)).toEqual({ uid: 0, gid: 0, home: '/root' })
    expect(resolveUser('app', passwd, group)).toEqual({ uid: 1000, gid: 1001, home: '/home/app' })
    expect(resolveUser('app:staff', passwd, group)).toEqual({ uid: 1000, gid: 50, home: '/home/app' })
    expect(resolveUser('4242:7', passwd, group)).toEqual({ uid: 4242, gid: 7, home: '/' })
    expect(resolveUser('1000', undefined, undefined)).toEqual({ uid: 1000, gid: 0, home: '/' })
    expect(() => resolveUser('nobody', passwd, group)).toThrow(UnknownUserError)
    expect(() => resolveUser('app:wheel', passwd, group)).toThrow(/group "wheel"/)
    expect(withHome(['PATH=/bin'], { uid: 0, gid: 0, home: '/root' })).toEqual(['PATH=/bin', 'HOME=/root'])
    expect(withHome(['HOME=/x'], { uid: 0, gid: 0, home: '/root' })).toEqual(['HOME=/x'])
  })
})
