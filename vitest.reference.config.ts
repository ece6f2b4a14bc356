import { defineConfig } from 'vitest/config'
import base from './vitest.config.js'

/** `npm run test:reference`: the tests that compare with the reference stack, which it sets up first. */
export default defineConfig({
  test: { ...base.test, include: ['test/reference/**/*.test.ts'], exclude: ['**/node_modules/**'] }
})
