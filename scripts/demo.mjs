// The demo behind `npm run demo`: the main job end to end on this machine, with no external
// daemon. Today: build an eStargz layer from local files, verify it, list it, read a file back.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

const root = resolve(import.meta.dirname, '..')
const cli = join(root, 'bin', 'ipfs-estargz.js')
const work = mkdtempSync(join(tmpdir(), 'ipfs-estargz-demo-'))
const run = (args, opts = {}) => execFileSync(process.execPath, [cli, ...args], { encoding: opts.encoding ?? 'utf8', maxBuffer: 1 << 30 })
const step = (title) => process.stdout.write(`\n== ${title}\n`)

try {
  step('a sample layer: this project\'s sources and docs as a tar')
  const tar = join(work, 'layer.tar')
  execFileSync('tar', ['-C', root, '--sort=name', '-cf', tar, 'src', 'docs', 'README.md', 'package.json'])
  console.log(tar)

  step('ipfs-estargz layer build')
  const built = JSON.parse(run(['layer', 'build', tar, join(work, 'layer.esgz')]))
  console.log(built)

  step('ipfs-estargz layer verify (TOC digest and every chunk)')
  console.log(run(['layer', 'verify', join(work, 'layer.esgz'), '--toc-digest', built.tocDigest]).trim())

  step('ipfs-estargz layer ls (first entries)')
  console.log(run(['layer', 'ls', join(work, 'layer.esgz')]).split('\n').slice(0, 6).join('\n'))

  step('ipfs-estargz layer cat package.json (verified read)')
  const pkg = run(['layer', 'cat', join(work, 'layer.esgz'), 'package.json'])
  const same = pkg === readFileSync(join(root, 'package.json'), 'utf8')
  console.log(`package.json read back from the blob: ${pkg.length} bytes, identical to the source: ${same}`)
  if (!same) process.exitCode = 1
} finally {
  rmSync(work, { recursive: true, force: true })
}
