import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Comparisons with the reference stack: `npm run test:reference` (vitest.reference.config.ts);
    // the install from the packed tarball: `npm run test:install` (vitest.install.config.ts).
    exclude: ['test/reference/**', 'test/install/**', '**/node_modules/**'],
    // The polyfill must run before any helia/libp2p module is evaluated (Node 20).
    setupFiles: ['./src/polyfill.ts', './test/helpers/worker-marker.ts'],
    globalSetup: ['./test/global-setup.ts'],
    // Native addons (fuse-native, better-sqlite3) are loaded in test processes: forks, not threads.
    pool: 'forks',
    // Two test files at a time, on any machine: most end-to-end files wait on the processes they
    // start (daemons, containerd, FUSE mounts), so two share two cores well; the whole suite ran in
    // 19 min this way against 33 min one at a time. Not more: timing-bound tests then starve.
    maxWorkers: 2,
    testTimeout: 120_000,
    hookTimeout: 300_000,
    // A file whose process blocks its own event loop stops vitest's timers with it, and the run
    // would wait for it forever: the watchdog stops such a file after 15 min (the slowest take 3)
    // and prints where it was stuck.
    reporters: ['default', ['./test/helpers/hang-watchdog.ts', { fileTimeoutS: 900 }]]
  }
})
