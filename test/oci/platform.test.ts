import { describe, expect, it } from 'vitest'
import { InvalidPlatformError } from '../../src/oci/errors.js'
import { formatPlatform, parsePlatform, platformMatches } from '../../src/oci/platform.js'

describe('platforms', () => {
  it('parses os/arch[/variant] with normalization', () => {
    expect(parsePlatform('linux/amd64')).toEqual({ os: 'linux', architecture: 'amd64' })
    expect(parsePlatform('linux/x86_64')).toEqual({ os: 'linux', architecture: 'amd64' })
    expect(parsePlatform('linux/aarch64')).toEqual({ os: 'linux', architecture: 'arm64' })
    expect(parsePlatform('linux/arm64/v8')).toEqual({ os: 'linux', architecture: 'arm64' })
    expect(parsePlatform('linux/arm')).toEqual({ os: 'linux', architecture: 'arm', variant: 'v7' })
    expect(parsePlatform('linux/arm/v6')).toEqual({ os: 'linux', architecture: 'arm', variant: 'v6' })
    expect(formatPlatform(parsePlatform('linux/arm/v6'))).toBe('linux/arm/v6')
  })

  it('rejects malformed platforms', () => {
    for (const s of ['linux', 'linux/', 'a/b/c/d', 'linux amd64', '']) expect(() => parsePlatform(s)).toThrow(InvalidPlatformError)
  })

  it('matches platforms', () => {
    const want = parsePlatform('linux/arm64')
    expect(platformMatches({ os: 'linux', architecture: 'arm64', variant: 'v8' }, want)).toBe(true)
    expect(platformMatches({ os: 'linux', architecture: 'amd64' }, want)).toBe(false)
    expect(platformMatches({ os: 'windows', architecture: 'arm64' }, want)).toBe(false)
    expect(platformMatches({ os: 'linux', architecture: 'arm', variant: 'v6' }, parsePlatform('linux/arm/v7'))).toBe(false)
    expect(platformMatches({ os: 'linux', architecture: 'arm', variant: 'v6' }, { os: 'linux', architecture: 'arm' })).toBe(false)
    expect(platformMatches({ os: 'linux', architecture: 'arm' }, parsePlatform('linux/arm/v7'))).toBe(true)
  })
})
