import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, describe, expect, it } from 'vitest'
import { compileRegexp } from '../../src/snapshotter/regexp.js'
import { hasCommand, needs } from '../helpers/env.js'

const run = promisify(execFile)

/** What containerd does with a `~=` value: Go's regexp.Compile, then MatchString on each text. */
const GO_PROGRAM = `package main

import (
	"encoding/json"
	"os"
	"regexp"
)

type Case struct {
	Pattern string   \`json:"pattern"\`
	Texts   []string \`json:"texts"\`
}

type Result struct {
	Err     bool   \`json:"err"\`
	Matches []bool \`json:"matches"\`
}

func main() {
	var cases []Case
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		panic(err)
	}
	out := make([]Result, len(cases))
	for i, c := range cases {
		re, err := regexp.Compile(c.Pattern)
		if err != nil {
			out[i] = Result{Err: true}
			continue
		}
		for _, t := range c.Texts {
			out[i].Matches = append(out[i].Matches, re.MatchString(t))
		}
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
`

const TEXTS = ['', 'a', 'A', 'ab', 'ba', 'aaa!', 'a\nb', 'a.b', 'é', 'É', 'Ω', '😀', '7', 'sha256:' + 'ab'.repeat(32), 'default/12/sha256:abc', 'x{y}', 'a b', '_', '-a-']

// not `(?<name>re)`: Go accepts it since 1.22, like RE2JS, and this machine's Go may be older
const HAND = [
  '^(a+)+$', 'a.b', '(?s)a.b', '^a$', '(?m)^b', 'a$', '\\Aa', 'a\\z', '\\ba\\b', '\\Bb', '(?i)é', '(?i)k', '[[:alpha:]]+', '[[:^digit:]]', '\\pL', '\\PL',
  '\\p{Greek}', '\\p{Lu}', '\\d', '\\D', '\\w+', '\\s', '[^\\n]', '\\x41', '\\x{1F600}', '\\101', '\\0', '\\Qa.b\\E', '(?U)a+?', 'x{y}', 'x{', '{', 'a{,3}',
  '(?P<n>a)(?P=n)', '(a)\\1', '(?=a)', '(?!a)', '(?<=a)b', '(?<!a)b', '\\u0041', '\\Z', '\\C', '\\cA', 'a**', 'a++', '(?i', '[z-a]', '[a', '(', ')',
  '\\8', '[\\d-z]', 'a{1000}', '(?:a{10}){100}', '^sha256:[0-9a-f]{64}$', '(?i)^SHA256:', '.', '^.$', '[^a]', '(|a)', 'a|', '|', '(?:)', '()', '\\.', '[.]', '\\pN+'
]

/** Random RE2-syntax patterns (seeded: the same on every run) */
function generated (count: number): string[] {
  let seed = 7
  const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n }
  const atoms = ['a', 'b', 'é', '😀', '.', '[ab]', '[^a]', '\\d', '\\w', '\\pL', '\\p{Greek}', '\\x{41}', '\\Qa.\\E', '^', '$', '\\b', '[[:alpha:]]', '[]a]', '\\{', '{', '(?i)', '(?s)', '\\1', '(?=']
  const ops = ['', '', '', '*', '+', '?', '*?', '+?', '{2}', '{1,3}', '{2,}', '{0}', '**']
  const gen = (depth: number): string => {
    let s = ''
    for (let i = rnd(4); i >= 0; i--) {
      const a = depth > 0 && rnd(3) === 0
        ? ['(', '(?:', '(?i:', `(?P<g${depth}${i}>`][rnd(4)] + gen(depth - 1) + (rnd(3) === 0 ? '|' + gen(depth - 1) : '') + ')'
        : atoms[rnd(atoms.length)] as string
      s += a + (ops[rnd(ops.length)] as string)
    }
    return s
  }
  return Array.from({ length: count }, () => gen(2))
}

describe.skipIf(needs({ go: hasCommand('go') }))('~= against Go\'s regexp package', () => {
  const dir = mkdtempSync(join(tmpdir(), 'regexp-go-'))
  afterAll(() => { rmSync(dir, { recursive: true, force: true }) })

  it('compiles and refuses the same patterns and matches the same texts', async () => {
    const patterns = [...HAND, ...generated(1500)]
    writeFileSync(join(dir, 'main.go'), GO_PROGRAM)
    const input = join(dir, 'cases.json')
    writeFileSync(input, JSON.stringify(patterns.map((pattern) => ({ pattern, texts: TEXTS }))))
    const { stdout } = await run('sh', ['-c', `go run main.go < ${input}`], { cwd: dir, maxBuffer: 64 << 20, env: { ...process.env, GO111MODULE: 'off' } })
    const go = JSON.parse(stdout) as Array<{ err: boolean, matches: boolean[] | null }>
    let refused = 0
    const differ: string[] = []
    for (const [i, pattern] of patterns.entries()) {
      let ours: { err: boolean, matches: boolean[] | null }
      try {
        const re = compileRegexp(pattern, 1_000_000) // the semantics, without our size limit
        ours = { err: false, matches: TEXTS.map((t) => re.test(t)) }
      } catch {
        ours = { err: true, matches: null }
      }
      if (ours.err) refused++
      if (JSON.stringify(ours) !== JSON.stringify(go[i])) differ.push(`${JSON.stringify(pattern)}: ours ${JSON.stringify(ours)}, Go ${JSON.stringify(go[i])}`)
    }
    expect(differ).toEqual([])
    expect(refused).toBeGreaterThan(100) // the corpus exercises refusals too
    expect(patterns.length - refused).toBeGreaterThan(500)
  }, 300_000)
})
