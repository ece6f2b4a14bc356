import { describe, expect, it } from 'vitest'
import { digestOf, isDigest, parseDigest, verifyBytes, verifyStream } from '../../src/oci/digest.js'
import { DigestMismatchError, InvalidDigestError, SizeMismatchError } from '../../src/oci/errors.js'

async function * pieces (...parts: string[]): AsyncGenerator<Uint8Array> {
  for (const p of parts) yield Buffer.from(p)
}

async function drain (it: AsyncIterable<Uint8Array>): Promise<string> {
  let s = ''
  for await (const p of it) s += Buffer.from(p).toString()
  return s
}

describe('digests', () => {
  const hello = digestOf(Buffer.from('hello world'))

  it('parses and validates sha256/sha512 digests', () => {
    expect(parseDigest(hello)).toEqual({ algorithm: 'sha256', hex: hello.slice(7) })
    expect(isDigest('sha256:abc')).toBe(false)
    expect(isDigest(hello.toUpperCase())).toBe(false)
    expect(isDigest('md5:' + 'a'.repeat(32))).toBe(false)
    expect(isDigest(digestOf(Buffer.from('x'), 'sha512'))).toBe(true)
    expect(() => parseDigest('sha256:zz')).toThrow(InvalidDigestError)
  })

  it('passes matching streams through', async () => {
    expect(await drain(verifyStream(pieces('hello', ' ', 'world'), { digest: hello, size: 11 }))).toBe('hello world')
  })

  it('fails a stream with the wrong bytes, naming the blob', async () => {
    const err = await drain(verifyStream(pieces('hello', ' ', 'WORLD'), { digest: hello, size: 11 }, 'oci:/x')).catch(e => e)
    expect(err).toBeInstanceOf(DigestMismatchError)
    expect(err.code).toBe('ERR_DIGEST_MISMATCH')
    expect(err.message).toContain(hello)
    expect(err.message).toContain('oci:/x')
  })

  it('fails as soon as a stream is longer than its size', async () => {
    let yielded = 0
    const err = await (async () => { for await (const _ of verifyStream(pieces('hello', ' world', 'more'), { digest: hello, size: 5 })) yielded++ })().catch(e => e)
    expect(err).toBeInstanceOf(SizeMismatchError)
    expect(yielded).toBe(1)
  })

  it('fails a short stream', async () => {
    await expect(drain(verifyStream(pieces('hello'), { digest: hello, size: 11 }))).rejects.toMatchObject({ code: 'ERR_SIZE_MISMATCH' })
    expect(() => { verifyBytes(Buffer.from('hello world'), { digest: hello, size: 11 }) }).not.toThrow()
    expect(() => { verifyBytes(Buffer.from('hello worle'), { digest: hello, size: 11 }) }).toThrow(DigestMismatchError)
  })
})
