import { randomBytes } from 'node:crypto'
import { open } from 'node:fs/promises'
import { SwarmKeyMalformedError, SwarmKeyPermissionsError, SwarmKeyUnreadableError } from './errors.js'

/**
 * The private swarm's pre-shared key, in the `swarm.key` v1 format go-ipfs and Kubo use:
 *
 *     /key/swarm/psk/1.0.0/
 *     /base16/
 *     <64 hex digits: 32 random bytes>
 *
 * Every connection of a node with a key is encrypted with it before anything else is said (libp2p
 * pnet, over TCP); a node with another key, or none, cannot connect. Only `/base16/` keys are
 * accepted: the one encoding libp2p's pnet decodes.
 */
export const SWARM_KEY = {
  header: '/key/swarm/psk/1.0.0/',
  encoding: '/base16/',
  /** Bytes of the key itself. */
  keyBytes: 32,
  /** Largest file read: a v1 key with CRLF line ends and a trailing newline is 97 bytes. */
  maxFileBytes: 256,
  /** Permission bits the file must not have: it is a secret shared by the swarm only. */
  forbiddenModeBits: 0o077
} as const

/** A new random key, as the file's text. */
export function generateSwarmKey (): string {
  return `${SWARM_KEY.header}\n${SWARM_KEY.encoding}\n${randomBytes(SWARM_KEY.keyBytes).toString('hex')}\n`
}

/**
 * Parses a key file's text strictly (line ends LF or CRLF, trailing blank lines allowed) and
 * returns the key in the canonical form libp2p's pnet takes. The message never holds key bytes.
 */
export function parseSwarmKey (text: string, where = 'swarm key'): Uint8Array {
  const lines = text.split(/\r?\n/)
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop()
  if (lines.length !== 3) throw new SwarmKeyMalformedError(`${where}: expected 3 lines (${SWARM_KEY.header}, ${SWARM_KEY.encoding}, the key), got ${lines.length}`)
  const [header, encoding, key] = lines
  if (header !== SWARM_KEY.header) throw new SwarmKeyMalformedError(`${where}: the first line must be ${SWARM_KEY.header}`)
  if (encoding !== SWARM_KEY.encoding) throw new SwarmKeyMalformedError(`${where}: the second line must be ${SWARM_KEY.encoding} (the only encoding supported)`)
  if (!/^[0-9a-fA-F]+$/.test(key) || key.length !== SWARM_KEY.keyBytes * 2) throw new SwarmKeyMalformedError(`${where}: the key must be ${SWARM_KEY.keyBytes * 2} hex digits`)
  return Buffer.from(`${SWARM_KEY.header}\n${SWARM_KEY.encoding}\n${key.toLowerCase()}`)
}

/**
 * Reads and parses the key file. Refuses a file its group or other users may access (like ssh
 * with a private key): a key others can read lets them into the swarm, and one others can write
 * lets them cut this node off. Set the mode 0600 or 0400 (a Kubernetes Secret volume:
 * `defaultMode: 0400`).
 */
export async function readSwarmKey (path: string): Promise<Uint8Array> {
  let text: string
  try {
    const fh = await open(path, 'r')
    try {
      const st = await fh.stat()
      if (!st.isFile()) throw new SwarmKeyUnreadableError(`swarm key ${path} is not a regular file`)
      if ((st.mode & SWARM_KEY.forbiddenModeBits) !== 0) {
        throw new SwarmKeyPermissionsError(`swarm key ${path} has mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}: others may access it; make it private (chmod 600)`)
      }
      if (st.size > SWARM_KEY.maxFileBytes) throw new SwarmKeyMalformedError(`swarm key ${path} is ${st.size} bytes; a v1 key is about 95`)
      const buf = Buffer.alloc(SWARM_KEY.maxFileBytes + 1)
      const { bytesRead } = await fh.read(buf, 0, buf.length, 0)
      if (bytesRead > SWARM_KEY.maxFileBytes) throw new SwarmKeyMalformedError(`swarm key ${path} is larger than ${SWARM_KEY.maxFileBytes} bytes`)
      text = buf.subarray(0, bytesRead).toString('utf8')
    } finally {
      await fh.close()
    }
  } catch (err) {
    if (err instanceof SwarmKeyPermissionsError || err instanceof SwarmKeyMalformedError || err instanceof SwarmKeyUnreadableError) throw err
    throw new SwarmKeyUnreadableError(`cannot read swarm key ${path}: ${(err as Error).message}`, { cause: err })
  }
  return parseSwarmKey(text, `swarm key ${path}`)
}
