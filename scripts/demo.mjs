// The demo behind `npm run demo`: the main job end to end on this machine, with an embedded
// Helia node (no external daemon): build an image from local files, convert it to eStargz and
// publish it to IPFS, inspect it by CID, then mount it lazily through FUSE and read a file back.
import { execFile, execFileSync, spawn } from 'node:child_process'
import { promisify } from 'node:util'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { gzipSync } from 'node:zlib'

const root = resolve(import.meta.dirname, '..')
const cli = join(root, 'bin', 'ipfs-estargz.js')
const work = mkdtempSync(join(tmpdir(), 'ipfs-estargz-demo-'))
const repo = join(work, 'repo')
const run = (args) => execFileSync(process.execPath, [cli, ...args], { encoding: 'utf8', maxBuffer: 1 << 30 })
const step = (title) => process.stdout.write(`\n== ${title}\n`)
const sha = (b) => 'sha256:' + createHash('sha256').update(b).digest('hex')

/** A one-layer OCI image of this project's sources, written as an OCI layout. */
function makeImage (dir) {
  const tar = execFileSync('tar', ['-C', root, '--sort=name', '--owner=0', '--group=0', '--numeric-owner', '-cf', '-', 'src', 'docs', 'README.md', 'package.json'], { maxBuffer: 1 << 28 })
  const layer = gzipSync(tar)
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/sh'] }, rootfs: { type: 'layers', diff_ids: [sha(tar)] }, history: [{ created_by: 'npm run demo' }] }))
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha(layer), size: layer.length }] }))
  mkdirSync(join(dir, 'blobs', 'sha256'), { recursive: true })
  for (const b of [layer, config, manifest]) writeFileSync(join(dir, 'blobs', 'sha256', sha(b).slice(7)), b)
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }))
  writeFileSync(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha(manifest), size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': 'demo' } }] }))
}

try {
  step('an OCI image of this project\'s sources (one gzip layer)')
  makeImage(join(work, 'image'))
  console.log(join(work, 'image'))

  step('ipfs-estargz push: convert to eStargz, publish through the embedded Helia node')
  const pushed = JSON.parse(run(['push', `oci:${join(work, 'image')}:demo`, '--repo', repo, '--json']))
  const layer = pushed.images[0].layers[0]
  console.log(`root CID   ${pushed.root}\nlayer      ${layer.digest} (${layer.size} bytes, ${layer.uncompressedSize} uncompressed)\nlayer CID  ${layer.cid}\nTOC digest ${layer.tocDigest}`)

  step('ipfs-estargz image ls / image inspect')
  console.log(run(['image', 'ls', '--repo', repo]).trim())
  const inspect = JSON.parse(run(['image', 'inspect', pushed.root, '--repo', repo, '--offline']))
  console.log(`manifest ${inspect.images[0].manifest.digest} → ${inspect.images[0].layers.length} layer(s), every descriptor with an ipfs:// URL`)

  const canMount = process.getuid?.() === 0 && existsSync('/dev/fuse')
  if (!canMount) {
    step('mount skipped: FUSE mounts need root and /dev/fuse')
  } else {
    step('ipfs-estargz mount: the image read-only through FUSE, every chunk verified')
    const mnt = join(work, 'mnt')
    mkdirSync(mnt)
    const child = spawn(process.execPath, [cli, 'mount', pushed.root, mnt, '--repo', repo], { stdio: ['ignore', 'ignore', 'pipe'] })
    const exited = new Promise(r => child.on('exit', r))
    let err = ''
    child.stderr.on('data', (d) => { err += d })
    for (let i = 0; i < 100 && !err.includes('mounted at'); i++) await new Promise(r => setTimeout(r, 100))
    if (!err.includes('mounted at')) throw new Error(`mount did not come up: ${err}`)
    console.log(err.trim())
    const pkg = execFileSync('cat', [join(mnt, 'package.json')], { encoding: 'utf8' })
    const same = pkg === readFileSync(join(root, 'package.json'), 'utf8')
    console.log(`cat ${join(mnt, 'package.json')}: ${pkg.length} bytes, identical to the source: ${same}`)
    console.log(execFileSync('ls', [join(mnt, 'src')], { encoding: 'utf8' }).trim().split('\n').join(' '))
    // async: the mount process logs to a pipe this process must keep reading meanwhile
    await promisify(execFile)(process.execPath, [cli, 'umount', mnt, '--repo', repo])
    await exited
    console.log('unmounted')
    if (!same) process.exitCode = 1
  }

  step('next: `ipfs-estargz daemon` serves containerd (see docs/operations.md); `ipfs-estargz --help` lists every command')
} finally {
  await new Promise(r => setTimeout(r, 1500)) // Helia writes its peer record just after stop
  rmSync(work, { recursive: true, force: true })
}
