import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Comparisons with the reference stack: `npm run test:reference` (vitest.reference.config.ts);
    // the install from the packed tarball: `npm run test:install` (vitest.install.config.ts).
    exclude: ['test/reference/**', 'test/install/**', '**/node_modules/**'],
    // The polyfill must run before any helia/libp2p module is evaluated (Node 20).
    setupFiles: ['./src/polyfill.ts'],
    globalSetup: ['./test/global-setup.ts'],
    // Native addons (fuse-native, better-sqlite3) are loaded in test processes: forks, not threads.
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 300_000
  }
})
