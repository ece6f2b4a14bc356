// The executable's entry: the top-level help and version are answered here, before main.js
// loads the daemon client, the repo and commander's whole command tree.
import { fastAnswer } from './top-level.js'

const fast = await fastAnswer(process.argv.slice(2))
if (fast == null) {
  await import('./main.js')
} else {
  process.stdout.on('error', () => {}) // `ipfs-estargz --help | head`: a closed pipe is no error
  if (fast.stdout != null) process.stdout.write(fast.stdout)
  if (fast.stderr != null) process.stderr.write(fast.stderr)
  process.exitCode = fast.code
}
