/**
 * Image references in skopeo's transport syntax: `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`,
 * `docker-archive:FILE[:REPO:TAG|:@INDEX]`, `docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`.
 */
import { isDigest } from './digest.js'
import { InvalidReferenceError } from './errors.js'

export interface OciLayoutReference {
  transport: 'oci'
  path: string
  tag?: string
}

export interface OciArchiveReference {
  transport: 'oci-archive'
  path: string
  tag?: string
}

export interface DockerArchiveReference {
  transport: 'docker-archive'
  path: string
  /** `repo:tag` out of the archive's RepoTags. */
  tag?: string
  /** `@N`: the Nth entry of manifest.json. */
  index?: number
}

export interface RegistryReference {
  transport: 'docker'
  /** `host[:port]` as used in URLs (docker.io resolves to registry-1.docker.io). */
  registry: string
  /** Repository path, e.g. `library/alpine`. */
  repository: string
  tag?: string
  digest?: string
}

export type ImageReference = OciLayoutReference | OciArchiveReference | DockerArchiveReference | RegistryReference

const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/
const HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/

function splitPathAndRest (s: string, raw: string): [string, string | undefined] {
  // Like skopeo: the path ends at the first colon, so paths cannot contain ':'.
  const i = s.indexOf(':')
  const path = i < 0 ? s : s.slice(0, i)
  if (path === '') throw new InvalidReferenceError(`invalid image reference ${JSON.stringify(raw)}: empty path`)
  return [path, i < 0 ? undefined : s.slice(i + 1)]
}

function checkTag (tag: string, raw: string): string {
  if (!TAG.test(tag)) throw new InvalidReferenceError(`invalid image reference ${JSON.stringify(raw)}: bad tag ${JSON.stringify(tag)}`)
  return tag
}

/** Parses `HOST[:PORT]/REPO[:TAG|@DIGEST]` (the part after `docker://`). */
export function parseRegistryReference (s: string, raw = s): RegistryReference {
  let rest = s
  let digest: string | undefined
  const at = rest.indexOf('@')
  if (at >= 0) {
    digest = rest.slice(at + 1)
    rest = rest.slice(0, at)
    if (!isDigest(digest)) throw new InvalidReferenceError(`invalid image reference ${JSON.stringify(raw)}: bad digest ${JSON.stringify(digest)}`)
  }
  let tag: string | undefined
  const slash = rest.lastIndexOf('/')
  const colon = rest.lastIndexOf(':')
  if (colon > slash) {
    tag = checkTag(rest.slice(colon + 1), raw)
    rest = rest.slice(0, colon)
  }
  const parts = rest.split('/')
  let registry: string
  // Docker's rule: the first component is a registry host if it has a '.' or ':' or is localhost.
  if (parts.length > 1 && (parts[0].includes('.') || parts[0].includes(':') || parts[0] === 'localhost' || parts[0].startsWith('['))) {
    registry = parts.shift() as string
    if (!HOST.test(registry)) throw new InvalidReferenceError(`invalid image reference ${JSON.stringify(raw)}: bad registry host ${JSON.stringify(registry)}`)
  } else {
    registry = 'docker.io'
  }
  if (registry === 'docker.io' || registry === 'index.docker.io') {
    registry = 'registry-1.docker.io'
    if (parts.length === 1) parts.unshift('library')
  }
  if (parts.length === 0 || parts.some(p => !PATH_COMPONENT.test(p))) {
    throw new InvalidReferenceError(`invalid image reference ${JSON.stringify(raw)}: bad repository ${JSON.stringify(parts.join('/'))} (lowercase letters, digits and . _ - separators)`)
  }
  const ref: RegistryReference = { transport: 'docker', registry, repository: parts.join('/') }
  if (digest != null) ref.digest = digest
  if (tag != null) ref.tag = tag
  if (digest == null && tag == null) ref.tag = 'latest'
  return ref
}

/** Parses a transport-prefixed reference; throws {@link InvalidReferenceError}. */
export function parseImageReference (raw: string): ImageReference {
  const colon = raw.indexOf(':')
  if (colon < 0) throw new InvalidReferenceError(`invalid image reference ${JSON.stringify(raw)}: want oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE or docker://HOST/REPO[:TAG]`)
  const transport = raw.slice(0, colon)
  const rest = raw.slice(colon + 1)
  switch (transport) {
    case 'oci':
    case 'oci-archive': {
      const [path, tag] = splitPathAndRest(rest, raw)
      const ref: OciLayoutReference | OciArchiveReference = { transport, path }
      if (tag != null && tag !== '') ref.tag = checkTag(tag, raw)
      return ref
    }
    case 'docker-archive': {
      const [path, sel] = splitPathAndRest(rest, raw)
      const ref: DockerArchiveReference = { transport, path }
      if (sel != null && sel !== '') {
        if (sel.startsWith('@')) {
          const n = Number(sel.slice(1))
          if (!Number.isSafeInteger(n) || n < 0 || sel.length < 2) throw new InvalidReferenceError(`invalid image reference ${JSON.stringify(raw)}: bad index ${JSON.stringify(sel)}`)
          ref.index = n
        } else {
          ref.tag = sel
        }
      }
      return ref
    }
    case 'docker': {
      if (!rest.startsWith('//')) throw new InvalidReferenceError(`invalid image reference ${JSON.stringify(raw)}: want docker://HOST/REPO[:TAG]`)
      return parseRegistryReference(rest.slice(2), raw)
    }
    default:
      throw new InvalidReferenceError(`invalid image reference ${JSON.stringify(raw)}: unknown transport ${JSON.stringify(transport)} (oci, oci-archive, docker-archive, docker)`)
  }
}

/** The reference back in transport syntax (for messages and logs). */
export function formatImageReference (ref: ImageReference): string {
  switch (ref.transport) {
    case 'oci':
    case 'oci-archive':
      return `${ref.transport}:${ref.path}${ref.tag != null ? `:${ref.tag}` : ''}`
    case 'docker-archive':
      return `docker-archive:${ref.path}${ref.tag != null ? `:${ref.tag}` : ref.index != null ? `:@${ref.index}` : ''}`
    case 'docker':
      return `docker://${ref.registry}/${ref.repository}${ref.tag != null ? `:${ref.tag}` : ''}${ref.digest != null ? `@${ref.digest}` : ''}`
  }
}
