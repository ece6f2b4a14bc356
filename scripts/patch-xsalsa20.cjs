// Patches xsalsa20@1.2.0 (a dependency of @libp2p/pnet, used for private swarms).
// Upstream bug: each cipher keeps a Uint8Array view of the shared WASM memory; when another
// instance grows that memory the view is detached, and the next update "grows" again by the
// whole size, so a PSK connection dies after ~48 MB (WebAssembly.Memory.grow(): Maximum memory
// size exceeded). Fix: refresh the view before checking its size. Idempotent; a no-op when
// @libp2p/pnet is not installed. See docs/development.md.
'use strict'
const fs = require('node:fs')
const path = require('node:path')

// @libp2p/pnet is ESM-only and does not export package.json, so locate it on disk.
const root = path.join(__dirname, '..', 'node_modules')
const pnet = path.join(root, '@libp2p', 'pnet')
if (!fs.existsSync(pnet)) process.exit(0)
const file = [path.join(pnet, 'node_modules', 'xsalsa20', 'index.js'), path.join(root, 'xsalsa20', 'index.js')]
  .find(f => fs.existsSync(f))
if (file == null) {
  console.error('patch-xsalsa20: @libp2p/pnet is installed but xsalsa20 is not where it is expected')
  process.exit(1)
}
const s = fs.readFileSync(file, 'utf8')
if (s.includes('/* patched: refresh view */')) process.exit(0)
const a = 'WASM.prototype.realloc = function (size) {\n  xsalsa20.memory.grow(Math.ceil(Math.abs(size - this._memory.length) / 65536))'
const b = 'WASM.prototype.realloc = function (size) {\n  this._memory = new Uint8Array(xsalsa20.memory.buffer) /* patched: refresh view */\n  if (size >= this._memory.length) xsalsa20.memory.grow(Math.ceil((size - this._memory.length + 1) / 65536))'
const c = '  top = head + len\n  if (top >= this._memory.length) this.realloc(top)'
const d = '  top = head + len\n  if (this._memory.buffer !== xsalsa20.memory.buffer) this._memory = new Uint8Array(xsalsa20.memory.buffer)\n  if (top >= this._memory.length) this.realloc(top)'
if (!s.includes(a) || !s.includes(c)) {
  console.error(`patch-xsalsa20: ${file} is not the xsalsa20@1.2.0 source this patch expects`)
  process.exit(1)
}
fs.writeFileSync(file, s.replace(a, b).replace(c, d))
console.error(`patch-xsalsa20: patched ${file}`)
