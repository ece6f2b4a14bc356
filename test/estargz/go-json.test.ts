import { describe, expect, it } from 'vitest'
import { goMarshalIndent, goQuote } from '../../src/estargz/go-json.js'

describe('Go-compatible JSON', () => {
  it('escapes like encoding/json with HTML escaping', () => {
    expect(goQuote('a<b>&c')).toBe('"a\\u003cb\\u003e\\u0026c"')
    expect(goQuote('q"\\')).toBe('"q\\"\\\\"')
    expect(goQuote('\b\f\n\r\t\x01\x1f')).toBe('"\\b\\f\\n\\r\\t\\u0001\\u001f"')
    expect(goQuote('\u2028\u2029')).toBe('"\\u2028\\u2029"')
    expect(goQuote('ü日本/\x7f')).toBe('"ü日本/\x7f"')
    expect(goQuote('\ud800x')).toBe('"\ufffdx"')
    expect(goQuote('😀')).toBe('"😀"')
  })

  it('indents with tabs, keeps key order, writes empty containers compactly', () => {
    expect(goMarshalIndent({ b: 1, a: [1, { x: 'y' }], e: [], o: {} })).toBe('{\n\t"b": 1,\n\t"a": [\n\t\t1,\n\t\t{\n\t\t\t"x": "y"\n\t\t}\n\t],\n\t"e": [],\n\t"o": {}\n}')
  })
})
