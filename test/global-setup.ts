import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'

/**
 * CLI tests run the compiled CLI (dist/). `npm test` builds it first (scripts/setup.sh); a bare
 * `npx vitest` on a fresh checkout builds it here.
 */
export default function setup (): void {
  const root = resolve(import.meta.dirname, '..')
  if (!existsSync(join(root, 'dist', 'cli', 'main.js'))) {
    execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' })
  }
}
