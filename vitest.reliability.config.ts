import { defineConfig } from 'vitest/config'
import base from './vitest.config.js'

/**
 * `npm run test:reliability`: the reliability campaign's full set (test/reliability/): the
 * reduced tests of `npm test` with their full case counts (RELIABILITY_FULL=1), plus the load and
 * soak tests (`*.full.ts`), which only this run includes. One file at a time: the load figures
 * must not measure another file's work.
 */
export default defineConfig({
  test: {
    ...base.test,
    include: ['test/reliability/**/*.test.ts', 'test/reliability/**/*.full.ts'],
    exclude: ['**/node_modules/**'],
    fileParallelism: false,
    testTimeout: 3_600_000,
    hookTimeout: 900_000,
    reporters: ['default', ['./test/helpers/hang-watchdog.ts', { fileTimeoutS: 4 * 3600 }]]
  }
})
