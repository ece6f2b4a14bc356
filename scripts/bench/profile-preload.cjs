// CPU profiles of the daemon and its FUSE manager for the start-up bench (`--profile DIR`):
// preloaded with NODE_OPTIONS=--require, it profiles from SIGUSR2 until the process exits and
// writes DIR/<role>-<pid>.cpuprofile (open in Chrome's DevTools). Other processes are untouched.
'use strict'
const role = process.argv.includes('fuse-manager') ? 'manager' : process.argv.includes('daemon') ? 'daemon' : null
const dir = process.env.IPFS_ESTARGZ_PROFILE_DIR
if (role != null && dir != null) {
  const inspector = require('node:inspector')
  const fs = require('node:fs')
  const session = new inspector.Session()
  session.connect()
  let started = false
  process.on('SIGUSR2', () => {
    if (started) return
    started = true
    session.post('Profiler.enable')
    session.post('Profiler.setSamplingInterval', { interval: 500 })
    session.post('Profiler.start')
  })
  process.on('exit', () => {
    if (!started) return
    // An in-process session answers synchronously, so the profile is written before exit.
    session.post('Profiler.stop', (err, r) => {
      if (err == null) fs.writeFileSync(`${dir}/${role}-${process.pid}.cpuprofile`, JSON.stringify(r.profile))
    })
  })
}
