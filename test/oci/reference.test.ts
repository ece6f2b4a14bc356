import { describe, expect, it } from 'vitest'
import { InvalidReferenceError } from '../../src/oci/errors.js'
import { formatImageReference, parseImageReference } from '../../src/oci/reference.js'

const D = 'sha256:' + 'a'.repeat(64)

describe('image references', () => {
  it('parses oci and oci-archive with and without tag', () => {
    expect(parseImageReference('oci:/tmp/img')).toEqual({ transport: 'oci', path: '/tmp/img' })
    expect(parseImageReference('oci:/tmp/img:v1.0')).toEqual({ transport: 'oci', path: '/tmp/img', tag: 'v1.0' })
    expect(parseImageReference('oci-archive:img.tar:latest')).toEqual({ transport: 'oci-archive', path: 'img.tar', tag: 'latest' })
  })

  it('parses docker-archive selectors', () => {
    expect(parseImageReference('docker-archive:/x/save.tar')).toEqual({ transport: 'docker-archive', path: '/x/save.tar' })
    expect(parseImageReference('docker-archive:/x/save.tar:busybox:1.36')).toEqual({ transport: 'docker-archive', path: '/x/save.tar', tag: 'busybox:1.36' })
    expect(parseImageReference('docker-archive:/x/save.tar:@1')).toEqual({ transport: 'docker-archive', path: '/x/save.tar', index: 1 })
  })

  it('parses docker:// references', () => {
    expect(parseImageReference('docker://127.0.0.1:5000/team/app:v2')).toEqual({ transport: 'docker', registry: '127.0.0.1:5000', repository: 'team/app', tag: 'v2' })
    expect(parseImageReference('docker://localhost/app')).toEqual({ transport: 'docker', registry: 'localhost', repository: 'app', tag: 'latest' })
    expect(parseImageReference(`docker://reg.example.com/app@${D}`)).toEqual({ transport: 'docker', registry: 'reg.example.com', repository: 'app', digest: D })
    expect(parseImageReference(`docker://reg.example.com/app:v1@${D}`)).toMatchObject({ tag: 'v1', digest: D })
    expect(parseImageReference('docker://alpine')).toEqual({ transport: 'docker', registry: 'registry-1.docker.io', repository: 'library/alpine', tag: 'latest' })
    expect(parseImageReference('docker://user/app:1')).toMatchObject({ registry: 'registry-1.docker.io', repository: 'user/app' })
  })

  it('round-trips through formatImageReference', () => {
    for (const s of ['oci:/a:b', 'oci-archive:/a.tar', 'docker-archive:/s.tar:@0', 'docker://127.0.0.1:5000/x/y:z', `docker://h.io/x@${D}`]) {
      expect(formatImageReference(parseImageReference(s))).toBe(s)
    }
  })

  it('rejects bad references with a typed error', () => {
    for (const s of ['img', 'ftp://x/y', 'oci:', 'oci:/x:bad tag', 'docker:/h/x', 'docker://h.io/UPPER', 'docker://h.io/x@sha256:123', 'docker-archive:/x:@-1']) {
      expect(() => parseImageReference(s), s).toThrow(InvalidReferenceError)
    }
  })
})
