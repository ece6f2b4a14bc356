/**
 * JSON text the way Go's encoding/json writes it, so our TOCs are byte-identical to what the
 * reference would write for the same entries: HTML-safe escaping (`<` → `\u003c`), U+2028/9
 * escaped, control characters as `\b \f \n \r \t` or `\u00XX`, lowercase hex.
 */
export function goQuote (s: string): string {
  let out = '"'
  let start = 0
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    let esc: string | undefined
    if (c < 0x20 || c === 0x22 || c === 0x5c || c === 0x3c || c === 0x3e || c === 0x26) {
      switch (c) {
        case 0x22: esc = '\\"'; break
        case 0x5c: esc = '\\\\'; break
        case 0x08: esc = '\\b'; break
        case 0x0c: esc = '\\f'; break
        case 0x0a: esc = '\\n'; break
        case 0x0d: esc = '\\r'; break
        case 0x09: esc = '\\t'; break
        default: esc = '\\u00' + c.toString(16).padStart(2, '0')
      }
    } else if (c === 0x2028 || c === 0x2029) {
      esc = '\\u' + c.toString(16)
    } else if (c >= 0xd800 && c <= 0xdfff) {
      // A lone surrogate cannot be encoded as UTF-8; Go would have replaced the bytes with U+FFFD.
      const pair = c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00
      if (pair) {
        i++
        continue
      }
      esc = '\ufffd'
    }
    if (esc !== undefined) {
      out += s.slice(start, i) + esc
      start = i + 1
    }
  }
  return out + s.slice(start) + '"'
}

/** A value in a Go-ordered JSON document: objects keep insertion order, like Go structs. */
export type GoJsonValue = string | number | boolean | null | GoJsonValue[] | { [key: string]: GoJsonValue }

/** `json.MarshalIndent(v, "", indent)`. Integers only: the TOC has no floats. */
export function goMarshalIndent (value: GoJsonValue, indent = '\t', prefix = ''): string {
  if (value === null) return 'null'
  if (typeof value === 'string') return goQuote(value)
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new TypeError(`cannot encode ${value}: TOC numbers are integers`)
    return String(value)
  }
  if (typeof value === 'boolean') return value ? 'true' : 'false'
  const inner = prefix + indent
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]'
    return '[\n' + value.map(v => inner + goMarshalIndent(v, indent, inner)).join(',\n') + '\n' + prefix + ']'
  }
  const keys = Object.keys(value)
  if (keys.length === 0) return '{}'
  return '{\n' + keys.map(k => `${inner}${goQuote(k)}: ${goMarshalIndent(value[k], indent, inner)}`).join(',\n') + '\n' + prefix + '}'
}
