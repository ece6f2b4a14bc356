import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { beforeEach, expect } from 'vitest'
import { WORKER_MARKERS_ENV } from './hang-watchdog.js'

/**
 * Setup file: tells the hang watchdog (the reporter in hang-watchdog.ts, in vitest's main process)
 * which process runs this test file, so that it can look inside and stop that process if the file
 * never ends. Forks are isolated: one process per test file.
 */
const dir = process.env[WORKER_MARKERS_ENV]
const file = expect.getState().testPath
if (dir != null && dir !== '' && file != null) {
  const marker = join(dir, String(process.pid))
  writeFileSync(marker, `${file}\n`)
  // written here, synchronously: vitest's own report of the test may never leave a blocked process
  beforeEach((ctx) => { writeFileSync(marker, `${file}\n${ctx.task.fullName}`) })
}
