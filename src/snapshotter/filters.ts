import { InvalidFilterError } from './errors.js'
import { compileRegexp } from './regexp.js'
import type { CompiledRegexp } from './regexp.js'

/**
 * containerd's filter language (`github.com/containerd/containerd/filters`), used by `List`:
 *
 *   selectors := selector ("," selector)*        all must match (AND)
 *   selector  := fieldpath [operator value]      no operator: the field is present
 *   fieldpath := field ("." field)*
 *   field     := quoted | [A-Za-z0-9_]+
 *   operator  := "==" | "!=" | "~="              "~=" is a regular expression match
 *   value     := quoted | [^\s,]+
 *   quoted    := "..." (Go string escapes); /.../ and |...| too, for "~=" values
 *
 * Several filter strings are OR-ed. Whitespace between tokens is ignored.
 * `~=` is Go's `regexp.MatchString` (RE2 syntax, unanchored), run by the same engine (regexp.ts).
 * One deliberate difference: containerd treats a regexp that does not compile as "never
 * matches"; we reject it as a malformed filter so the caller learns about the typo.
 */

export const DEFAULTS = {
  /**
   * all `~=` patterns of one List call together compile to at most this many RE2 instructions.
   * Matching one snapshot costs up to this many steps per character of its fields, on the event
   * loop: about 60-120 ms against a 4 KiB label value at this limit, ~2 ms against a usual key.
   * `^sha256:[0-9a-f]{64}$` takes 75.
   */
  maxRegexpInstructions: 128
}

export type FilterOptions = Partial<typeof DEFAULTS>

/** What the regexps of one parse may still spend. */
interface Budget { instructions: number }

/** Returns the value of a field path and whether the object has it. */
export type FieldAdaptor = (fieldpath: string[]) => { value: string, present: boolean }

export interface Filter {
  match (adaptor: FieldAdaptor): boolean
}

type Operator = 'present' | '==' | '!=' | '~='

interface Selector {
  fieldpath: string[]
  operator: Operator
  value: string
  re?: CompiledRegexp
}

const ALWAYS: Filter = { match: () => true }

/** Parses one filter string (comma = AND). The empty string matches everything. */
export function parseFilter (input: string, options: FilterOptions = {}): Filter {
  return parseOne(input, { instructions: options.maxRegexpInstructions ?? DEFAULTS.maxRegexpInstructions })
}

/** Parses several filter strings; an object matches when any of them matches (OR). Their regexps share one budget. */
export function parseFilters (inputs: readonly string[], options: FilterOptions = {}): Filter {
  if (inputs.length === 0) return ALWAYS
  const budget = { instructions: options.maxRegexpInstructions ?? DEFAULTS.maxRegexpInstructions }
  const filters = inputs.map((input) => parseOne(input, budget))
  return { match: (adaptor) => filters.some((f) => f.match(adaptor)) }
}

function parseOne (input: string, budget: Budget): Filter {
  if (input === '') return ALWAYS
  const selectors = new Parser(input, budget).parse()
  return {
    match: (adaptor) => selectors.every((s) => matchSelector(s, adaptor))
  }
}

function matchSelector (s: Selector, adaptor: FieldAdaptor): boolean {
  const { value, present } = adaptor(s.fieldpath)
  switch (s.operator) {
    case 'present': return present
    case '==': return present && value === s.value
    // containerd: an absent field has the value "", so `parent!=""` excludes snapshots without parent
    case '!=': return value !== s.value
    case '~=': return s.re?.test(value) ?? false
  }
}

const EOF = -1

type TokenKind = 'eof' | 'quoted' | 'value' | 'field' | 'separator' | 'operator' | 'illegal' | 'other'

interface Token { pos: number, kind: TokenKind, text: string }

const isFieldChar = (c: string): boolean => /^[A-Za-z0-9_]$/.test(c)
const isOperatorChar = (c: string): boolean => c === '=' || c === '!' || c === '~'
const isQuoteChar = (c: string): boolean => c === '"' || c === '/' || c === '|'
const isSeparatorChar = (c: string): boolean => c === ',' || c === '.'
const isSpace = (c: string): boolean => /^\s$/u.test(c)
const isValueChar = (c: string): boolean => c !== ',' && !isSpace(c) && c !== '\0'

/** A scanner with the same token rules as containerd's (values only right after an operator). */
class Scanner {
  private pos = 0
  private afterOperator = false
  err = ''
  constructor (private readonly input: string) {}

  private peekChar (): string | typeof EOF {
    if (this.pos >= this.input.length) return EOF
    return String.fromCodePoint(this.input.codePointAt(this.pos) ?? 0)
  }

  private nextChar (): string | typeof EOF {
    const c = this.peekChar()
    if (c !== EOF) this.pos += c.length
    return c
  }

  /** The next significant character (skipping spaces), without consuming it. */
  peek (): string | typeof EOF {
    let p = this.pos
    while (p < this.input.length && isSpace(this.input[p] ?? '')) p++
    if (p >= this.input.length) return EOF
    return String.fromCodePoint(this.input.codePointAt(p) ?? 0)
  }

  scan (): Token {
    let c = this.nextChar()
    while (c !== EOF && isSpace(c)) c = this.nextChar()
    if (c === EOF) return { pos: this.input.length, kind: 'eof', text: '' }
    const start = this.pos - c.length
    if (c === '\0') { this.err ||= 'unexpected null'; return { pos: start, kind: 'illegal', text: c } }
    if (isQuoteChar(c)) {
      const ok = this.scanQuoted(c)
      return { pos: start, kind: ok ? 'quoted' : 'illegal', text: this.input.slice(start, this.pos) }
    }
    if (isSeparatorChar(c)) {
      this.afterOperator = false
      return { pos: start, kind: 'separator', text: c }
    }
    if (isOperatorChar(c)) {
      while (isOperatorChar(String(this.peekChar()))) this.nextChar()
      this.afterOperator = true
      return { pos: start, kind: 'operator', text: this.input.slice(start, this.pos) }
    }
    if (this.afterOperator) {
      while (true) {
        const n = this.peekChar()
        if (n === EOF || !isValueChar(n)) break
        this.nextChar()
      }
      this.afterOperator = false
      return { pos: start, kind: 'value', text: this.input.slice(start, this.pos) }
    }
    if (isFieldChar(c)) {
      while (true) {
        const n = this.peekChar()
        if (n === EOF || !isFieldChar(n)) break
        this.nextChar()
      }
      return { pos: start, kind: 'field', text: this.input.slice(start, this.pos) }
    }
    return { pos: start, kind: 'other', text: c }
  }

  private scanQuoted (quote: string): boolean {
    while (true) {
      const c = this.nextChar()
      if (c === EOF || c === '\n') { this.err ||= 'quoted literal not terminated'; return false }
      if (c === quote) return true
      if (c === '\\') this.nextChar()
    }
  }
}

class Parser {
  private readonly scanner: Scanner
  constructor (private readonly input: string, private readonly budget: Budget) {
    this.scanner = new Scanner(input)
  }

  parse (): Selector[] {
    const out = [this.selector()]
    while (true) {
      const c = this.scanner.peek()
      if (c === EOF) return out
      const tok = this.scanner.scan()
      if (tok.kind !== 'separator' || tok.text !== ',') throw this.error(tok.pos, `unexpected input: ${tok.text}`)
      out.push(this.selector())
    }
  }

  private selector (): Selector {
    const fieldpath = this.fieldpath()
    const next = this.scanner.peek()
    if (next === EOF || next === ',') return { fieldpath, operator: 'present', value: '' }
    const op = this.operator()
    const tok = this.scanner.scan()
    let value: string
    switch (tok.kind) {
      case 'value':
      case 'field':
        value = tok.text
        break
      case 'quoted':
        value = this.unquote(tok, op === '~=')
        break
      case 'illegal':
        throw this.error(tok.pos, this.scanner.err)
      case 'eof':
        throw this.error(tok.pos, 'unexpected end of filter: expected a value')
      default:
        throw this.error(tok.pos, 'expected value or quoted')
    }
    const sel: Selector = { fieldpath, operator: op, value }
    if (op === '~=') {
      try {
        sel.re = compileRegexp(value, this.budget.instructions)
      } catch (err) {
        throw this.error(tok.pos, `invalid regular expression ${JSON.stringify(clip(value, 'end'))}: ${clip((err as Error).message, 'end')}`)
      }
      this.budget.instructions -= sel.re.instructions
    }
    return sel
  }

  private fieldpath (): string[] {
    const fields = [this.field()]
    while (this.scanner.peek() === '.') {
      this.scanner.scan()
      fields.push(this.field())
    }
    return fields
  }

  private field (): string {
    const tok = this.scanner.scan()
    switch (tok.kind) {
      case 'field': return tok.text
      case 'quoted': return this.unquote(tok, false)
      case 'illegal': throw this.error(tok.pos, this.scanner.err)
      case 'eof': throw this.error(tok.pos, 'unexpected end of filter: expected a field')
      default: throw this.error(tok.pos, 'expected field or quoted')
    }
  }

  private operator (): Operator {
    const tok = this.scanner.scan()
    if (tok.kind === 'operator') {
      if (tok.text === '==' || tok.text === '!=' || tok.text === '~=') return tok.text
      throw this.error(tok.pos, `unsupported operator ${JSON.stringify(tok.text)}`)
    }
    if (tok.kind === 'illegal') throw this.error(tok.pos, this.scanner.err)
    throw this.error(tok.pos, 'expected an operator ("=="|"!="|"~=")')
  }

  private unquote (tok: Token, allowAlternativeQuotes: boolean): string {
    if (!allowAlternativeQuotes && tok.text[0] !== '"') throw this.error(tok.pos, 'invalid quote encountered')
    try {
      return unquote(tok.text)
    } catch {
      throw this.error(tok.pos, `unquoting failed: bad escape in ${tok.text}`)
    }
  }

  private error (pos: number, msg: string): InvalidFilterError {
    const where = pos < this.input.length
      ? `${clip(this.input.slice(0, pos), 'start')} >|${this.input.slice(pos, pos + 1)}|< ${clip(this.input.slice(pos + 1), 'end')}`
      : clip(this.input, 'start')
    return new InvalidFilterError(`invalid filter [${where}]: ${msg}`)
  }
}

/** Error messages travel in gRPC trailers, whose size is limited: long filters are shown around the error only. */
const CONTEXT_CHARS = 100

function clip (s: string, keep: 'start' | 'end'): string {
  if (s.length <= CONTEXT_CHARS) return s
  return keep === 'start' ? `…${s.slice(-CONTEXT_CHARS)}` : `${s.slice(0, CONTEXT_CHARS)}…`
}

const SIMPLE_ESCAPES: Record<string, string> = { a: '\x07', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v', '\\': '\\' }

/** Go's strconv.Unquote for "..." (and the /.../, |...| forms filters allow); throws on bad syntax. */
export function unquote (s: string): string {
  const quote = s[0]
  if (s.length < 2 || quote == null || s[s.length - 1] !== quote) throw new SyntaxError('quote syntax')
  const body = s.slice(1, -1)
  const bytes: number[] = []
  const enc = new TextEncoder()
  for (let i = 0; i < body.length;) {
    const c = body[i] as string
    if (c === quote || c === '\n') throw new SyntaxError('quote syntax')
    if (c !== '\\') {
      const cp = body.codePointAt(i) ?? 0
      const ch = String.fromCodePoint(cp)
      bytes.push(...enc.encode(ch))
      i += ch.length
      continue
    }
    const e = body[i + 1]
    if (e == null) throw new SyntaxError('quote syntax')
    i += 2
    if (e in SIMPLE_ESCAPES) { bytes.push(...enc.encode(SIMPLE_ESCAPES[e])); continue }
    if (e === quote) { bytes.push(e.charCodeAt(0)); continue }
    if (e === 'x' || e === 'u' || e === 'U') {
      const n = e === 'x' ? 2 : e === 'u' ? 4 : 8
      const hex = body.slice(i, i + n)
      if (hex.length !== n || !/^[0-9a-fA-F]+$/.test(hex)) throw new SyntaxError('quote syntax')
      const v = parseInt(hex, 16)
      i += n
      if (e === 'x') { bytes.push(v); continue }
      if (v > 0x10ffff) throw new SyntaxError('quote syntax')
      bytes.push(...enc.encode(String.fromCodePoint(v)))
      continue
    }
    if (/^[0-7]$/.test(e)) {
      const oct = e + body.slice(i, i + 2)
      if (!/^[0-7]{3}$/.test(oct)) throw new SyntaxError('quote syntax')
      const v = parseInt(oct, 8)
      if (v > 255) throw new SyntaxError('quote syntax')
      bytes.push(v)
      i += 2
      continue
    }
    throw new SyntaxError('quote syntax')
  }
  return new TextDecoder().decode(new Uint8Array(bytes))
}
