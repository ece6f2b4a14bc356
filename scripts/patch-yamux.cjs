// Patches @libp2p/yamux's receive side to send a window update only once half the stream's
// receive window is used, as go-yamux and the yamux spec's reference implementation do. As
// published it sends one after every data frame it receives: a block-exchange answer of a few
// small blocks cost the peer one more encrypted frame and one more socket write each, which on
// two cores measured ~10 % of the CPU of both nodes in a lazy pull. The sender's window, and so
// the flow control, is unchanged. Idempotent; fails loudly on a yamux it does not recognise.
// See docs/development.md.
'use strict'
const fs = require('node:fs')
const path = require('node:path')

const file = path.join(__dirname, '..', 'node_modules', '@libp2p', 'yamux', 'dist', 'src', 'stream.js')
if (!fs.existsSync(file)) process.exit(0)
const s = fs.readFileSync(file, 'utf8')
if (s.includes('/* patched: half-window updates */')) process.exit(0)
const a = '        if (this.recvWindowCapacity >= this.recvWindow && flags === 0) {'
const b = '        if (flags === 0 && this.recvWindow - this.recvWindowCapacity < this.recvWindow / 2) { /* patched: half-window updates */'
if (s.split(a).length !== 2) {
  console.error(`patch-yamux: ${file} is not the @libp2p/yamux source this patch expects`)
  process.exit(1)
}
fs.writeFileSync(file, s.replace(a, b))
console.error(`patch-yamux: patched ${file}`)
