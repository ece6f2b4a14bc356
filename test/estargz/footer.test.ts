import { describe, expect, it } from 'vitest'
import { BadFooterError, encodeFooter, parseFooter } from '../../src/estargz/index.js'
import { footer47 } from '../helpers/forge.js'

describe('footer', () => {
  it('encodes the 51-byte footer byte for byte as the reference does', () => {
    // the example from the reference's gzip.go for tocOffset 0x1234
    expect(Buffer.from(encodeFooter(0x1234)).toString('hex')).toBe('1f8b08040000000000ff1a00534716003030303030303030303030303132333453544152475a010000ffff0000000000000000')
  })

  it('round-trips offsets and reads the legacy 47-byte footer', () => {
    for (const off of [0, 1, 0xdeadbeef, Number.MAX_SAFE_INTEGER]) {
      expect(parseFooter(encodeFooter(off))).toEqual({ tocOffset: off, footerSize: 51 })
      expect(parseFooter(footer47(off))).toEqual({ tocOffset: off, footerSize: 47 })
      // the legacy footer read from a 51-byte tail (the blob is larger than 47 bytes)
      expect(parseFooter(Buffer.concat([Buffer.alloc(4), footer47(off)]))).toEqual({ tocOffset: off, footerSize: 47 })
    }
  })

  it('rejects anything else with BadFooterError', () => {
    const good = Buffer.from(encodeFooter(42))
    const cases: Buffer[] = [
      Buffer.alloc(51),
      Buffer.alloc(10),
      Buffer.concat([good.subarray(0, 32), Buffer.from('STARGY'), good.subarray(38)]),
      Buffer.concat([good.subarray(0, 16), Buffer.from('zzzzzzzzzzzzzzzz'), good.subarray(32)]),
      Buffer.from(good).fill(0x41, 12, 14)
    ]
    for (const c of cases) expect(() => parseFooter(c)).toThrow(BadFooterError)
    try { parseFooter(Buffer.alloc(51)) } catch (e) { expect((e as BadFooterError).code).toBe('ERR_BAD_FOOTER') }
  })
})
