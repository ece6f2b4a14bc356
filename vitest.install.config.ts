import { defineConfig } from 'vitest/config'
import base from './vitest.config.js'

/** `npm run test:install`: pack, install into a clean prefix, run the installed command. */
export default defineConfig({
  test: { ...base.test, include: ['test/install/**/*.test.ts'], exclude: ['**/node_modules/**'] }
})
