import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { hasCommand, isRoot } from './env.js'
import { cacheDir, repoRoot } from './tools.js'

/** Script that builds the Debian test images (see its header for what they contain). */
export const fixtureScript = join(repoRoot, 'scripts', 'fixtures', 'debootstrap-image.sh')

/** Where the built images are kept between runs. */
export const imagesDir = join(cacheDir, 'images')

/** Prerequisites for {@link debianPythonImage}, for `needs({ ...debianImageNeeds })`. */
export const debianImageNeeds = { root: isRoot, debootstrap: hasCommand('debootstrap') }

export interface DebianPythonImage {
  /** OCI image layout (tag `latest`): layer 1 debootstrap minbase bookworm, layer 2 python3. */
  layout: string
  /** The same image as an oci-archive tar. */
  archive: string
  /** The same image as a docker-archive tar (`docker save` layout, uncompressed layers). */
  dockerArchive: string
  /** Same file contents as `layout`, but every tar entry has another mtime (dedup tests). */
  rebuiltLayout: string
}

export class FixtureUnavailableError extends Error {
  readonly code = 'ERR_FIXTURE_UNAVAILABLE'
  constructor (message: string) {
    super(message)
    this.name = 'FixtureUnavailableError'
  }
}

let pending: Promise<DebianPythonImage> | undefined

/**
 * Builds (first call on a cold cache: a minute or two, needs root and the Debian mirror of the
 * machine's apt sources) or reuses the Debian+python3 test image. The script keeps a stamped
 * cache and serialises concurrent builders, so parallel test files share one build.
 */
export async function debianPythonImage (): Promise<DebianPythonImage> {
  pending ??= build().catch((err: unknown) => {
    pending = undefined // a later call may retry (e.g. after the mirror came back)
    throw err
  })
  return await pending
}

async function build (): Promise<DebianPythonImage> {
  if (!isRoot()) throw new FixtureUnavailableError('debianPythonImage() needs root (debootstrap, chroot and overlay mounts)')
  if (!hasCommand('debootstrap')()) throw new FixtureUnavailableError('debianPythonImage() needs debootstrap (apt-get install debootstrap)')
  const layout = await run(fixtureScript, [imagesDir])
  return {
    layout,
    archive: `${layout}.oci.tar`,
    dockerArchive: `${layout}.docker.tar`,
    rebuiltLayout: `${layout}-rebuilt`
  }
}

/** Runs the script; resolves with the last stdout line, rejects with the tail of its stderr. */
async function run (script: string, args: string[]): Promise<string> {
  return await new Promise((resolve, reject) => {
    const child = spawn('bash', [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.setEncoding('utf8').on('data', (s: string) => { out += s })
    child.stderr.setEncoding('utf8').on('data', (s: string) => { err = (err + s).slice(-8192) })
    child.on('error', reject)
    child.on('close', (code, signal) => {
      const last = out.trim().split('\n').pop() ?? ''
      if (code === 0 && last !== '') {
        resolve(last)
        return
      }
      reject(new FixtureUnavailableError(
        `building the Debian test image failed (${signal ?? `exit ${String(code)}`}); is debootstrap installed and the ` +
        `Debian mirror from /etc/apt/sources.list* reachable? ${script} said:\n${err.trim()}`))
    })
  })
}
