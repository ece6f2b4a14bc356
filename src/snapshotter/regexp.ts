import { RE2JS } from 're2js'
import { RegexpSyntaxError } from './errors.js'

/**
 * containerd matches `~=` filters with Go's `regexp`, which is RE2: linear time, no
 * backreferences, no lookarounds. RE2JS is the same engine and syntax in pure JavaScript, so a
 * pattern means here what it means to containerd, and what RE2 refuses is refused here too.
 *
 * Linear time is O(program size × text length), and compiling is O(program size). Both factors
 * must stay small, because matching runs on the event loop: a `{n}` repeat copies its operand n
 * times (RE2 allows n up to 1000), so a 25-byte pattern can compile to 5000 instructions. The
 * program size is therefore estimated from the pattern text before compiling it, and checked
 * exactly after.
 */
export interface CompiledRegexp {
  /** whether the pattern matches anywhere in `text` (Go's `MatchString`: unanchored) */
  test (text: string): boolean
  /** instructions of the compiled program: the factor matching costs per character */
  readonly instructions: number
}

/** Instructions every RE2 program has besides the pattern's own (fail, match, start). */
const PROGRAM_OVERHEAD = 3
/** Patterns estimated at up to this many times the limit are compiled and then measured exactly. */
const ESTIMATE_SLACK = 4
/** RE2 refuses repeat counts above 1000; bigger ones only need to make the estimate big. */
const MAX_REPEAT = 1001

/** Compiles `pattern` as Go's `regexp.Compile` would, refusing programs of more than `maxInstructions`. */
export function compileRegexp (pattern: string, maxInstructions: number): CompiledRegexp {
  // the estimate only guards the compiler's work: it may be off by a small factor either way
  const estimate = estimateProgramSize(pattern)
  if (estimate > maxInstructions * ESTIMATE_SLACK) throw tooLarge(`about ${estimate}`, maxInstructions)
  let re: RE2JS
  try {
    re = RE2JS.compile(pattern)
  } catch (err) {
    throw new RegexpSyntaxError((err as Error).message, { cause: err })
  }
  const instructions = re.re2().numberOfInstructions() as number
  if (instructions > maxInstructions) throw tooLarge(String(instructions), maxInstructions)
  return { test: (text) => re.test(text), instructions }
}

function tooLarge (size: string, max: number): RegexpSyntaxError {
  return new RegexpSyntaxError(`expression too large: ${size} RE2 instructions, more than the ${max} left for this List call`)
}

interface Group { total: number, last: number, capture: boolean }

/**
 * An upper bound of the instructions RE2 compiles `pattern` to, read off the text in one pass
 * (RE2's own `checkSize` runs only inside the compiler). A literal, class or assertion is one
 * instruction, a capture adds two, `|`, `*`, `+`, `?` one each, and `x{n,m}` is m copies of x
 * plus m - n optional branches. Syntax errors are left to RE2, which finds them before expanding
 * anything.
 */
export function estimateProgramSize (pattern: string): number {
  const cps = Array.from(pattern)
  const stack: Group[] = []
  let cur: Group = { total: 0, last: 0, capture: false }
  const atom = (w: number): void => { cur.total += w; cur.last = w }
  const close = (): boolean => {
    const parent = stack.pop()
    if (parent == null) return false
    const w = cur.total + (cur.capture ? 2 : 0)
    cur = parent
    atom(w)
    return true
  }
  let i = 0
  while (i < cps.length) {
    const c = cps[i]
    if (c === '\\') {
      const e = cps[i + 1]
      if (e === 'Q') { // literal text up to \E
        let j = i + 2
        while (j < cps.length && !(cps[j] === '\\' && cps[j + 1] === 'E')) { atom(1); j++ }
        i = j + 2
      } else if ((e === 'p' || e === 'P' || e === 'x') && cps[i + 2] === '{') {
        const end = cps.indexOf('}', i + 3)
        i = end < 0 ? cps.length : end + 1
        atom(1)
      } else {
        i += 2
        atom(1)
      }
    } else if (c === '[') { // a class is one instruction, whatever its ranges
      let j = i + 1
      if (cps[j] === '^') j++
      if (cps[j] === ']') j++ // a leading ] is a literal
      while (j < cps.length && cps[j] !== ']') {
        if (cps[j] === '\\') {
          j += 2
        } else if (cps[j] === '[' && cps[j + 1] === ':') {
          let k = j + 2 // [:name:], as Go finds it: the next :] anywhere after
          while (k < cps.length - 1 && !(cps[k] === ':' && cps[k + 1] === ']')) k++
          j = k < cps.length - 1 ? k + 2 : j + 1
        } else {
          j++
        }
      }
      i = j + 1
      atom(1)
    } else if (c === '(') {
      let capture = true
      let j = i // the group's contents start after j
      if (cps[i + 1] === '?') {
        j = i + 2
        if (cps[j] === 'P' || (cps[j] === '<' && cps[j + 1] !== '=' && cps[j + 1] !== '!')) { // (?P<name>re), (?<name>re)
          while (j < cps.length && cps[j] !== '>') j++
        } else { // (?:re), (?flags:re), (?flags)
          capture = false
          while (j < cps.length && cps[j] !== ':' && cps[j] !== ')') j++
          if (cps[j] === ')') { // flags only: no group, nothing to repeat
            cur.last = 0
            i = j + 1
            continue
          }
        }
      }
      stack.push(cur)
      cur = { total: 0, last: 0, capture }
      i = j + 1
    } else if (c === ')') {
      close() // an unbalanced one is RE2's error to report
      i++
    } else if (c === '|') {
      cur.total += 1
      cur.last = 0
      i++
    } else if (c === '*' || c === '+' || c === '?') {
      cur.total += 1
      cur.last += 1
      i++
    } else if (c === '{') {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(cps.slice(i, i + 24).join(''))
      if (m == null) { // not a repeat: a literal brace
        atom(1)
        i++
        continue
      }
      const min = Math.min(Number(m[1]), MAX_REPEAT)
      const max = m[2] == null ? min : m[3] === '' ? min + 1 : Math.min(Number(m[3]), MAX_REPEAT)
      const w = max === 0 ? 1 : cur.last * max + Math.max(max - min, 1)
      cur.total += w - cur.last
      cur.last = w
      i += m[0].length
    } else {
      atom(1)
      i++
    }
  }
  while (close()) { /* an unclosed group: RE2 reports it */ }
  return cur.total + PROGRAM_OVERHEAD
}
