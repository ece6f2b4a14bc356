import { createHash } from 'node:crypto'

/**
 * A small tar writer for test fixtures: USTAR headers plus PAX records for what USTAR cannot
 * hold (long or non-ASCII names, xattrs, large ids). Independent of the code under test, so
 * fixtures do not inherit its bugs.
 */
export interface FixtureEntry {
  name: string
  type?: 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo'
  data?: Uint8Array | string
  mode?: number
  uid?: number
  gid?: number
  uname?: string
  gname?: string
  mtime?: number
  linkName?: string
  devMajor?: number
  devMinor?: number
  xattrs?: Record<string, string | Uint8Array>
  /** Extra raw PAX records. */
  pax?: Record<string, string>
}

const TYPEFLAG = { file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' } as const

function octal (n: number, width: number): string {
  return n.toString(8).padStart(width - 1, '0') + '\0'
}

function header (name: string, flag: string, size: number, e: FixtureEntry, linkName: string): Buffer {
  const b = Buffer.alloc(512)
  b.write(name, 0, 100, 'utf8')
  b.write(octal(e.mode ?? (flag === '5' ? 0o755 : 0o644), 8), 100, 'latin1')
  b.write(octal(Math.min(e.uid ?? 0, 0o7777777), 8), 108, 'latin1')
  b.write(octal(Math.min(e.gid ?? 0, 0o7777777), 8), 116, 'latin1')
  b.write(octal(size, 12), 124, 'latin1')
  b.write(octal(Math.floor(e.mtime ?? 1700000000), 12), 136, 'latin1')
  b.write(flag, 156, 'latin1')
  b.write(linkName, 157, 100, 'utf8')
  b.write('ustar\0', 257, 'latin1')
  b.write('00', 263, 'latin1')
  b.write(e.uname ?? '', 265, 32, 'utf8')
  b.write(e.gname ?? '', 297, 32, 'utf8')
  b.write(octal(e.devMajor ?? 0, 8), 329, 'latin1')
  b.write(octal(e.devMinor ?? 0, 8), 337, 'latin1')
  b.fill(0x20, 148, 156)
  let sum = 0
  for (const x of b) sum += x
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1')
  return b
}

function paxRecord (key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')])
  let len = body.length + 1
  while (String(len).length + body.length !== len) len = String(len).length + body.length
  return Buffer.concat([Buffer.from(String(len)), body])
}

function pad (n: number): Buffer {
  return Buffer.alloc((512 - (n % 512)) % 512)
}

/** Encodes entries as a tar archive (with the two zero blocks at the end). */
export function makeTar (entries: FixtureEntry[], { eof = true } = {}): Buffer {
  const out: Buffer[] = []
  for (const e of entries) {
    const type = e.type ?? 'file'
    const flag = TYPEFLAG[type]
    const data = type === 'file' ? Buffer.from(e.data ?? '') : Buffer.alloc(0)
    const linkName = e.linkName ?? ''
    const records: Buffer[] = []
    const ascii = (s: string): boolean => /^[\x20-\x7e]*$/.test(s)
    let name = e.name
    if (Buffer.byteLength(name) > 100 || !ascii(name)) {
      records.push(paxRecord('path', Buffer.from(name)))
      name = name.slice(0, 50).replace(/[^\x20-\x7e]/g, '_')
    }
    let link = linkName
    if (Buffer.byteLength(link) > 100 || !ascii(link)) {
      records.push(paxRecord('linkpath', Buffer.from(link)))
      link = ''
    }
    if ((e.uid ?? 0) > 0o7777777) records.push(paxRecord('uid', Buffer.from(String(e.uid))))
    for (const [k, v] of Object.entries(e.xattrs ?? {})) records.push(paxRecord(`SCHILY.xattr.${k}`, Buffer.from(v)))
    for (const [k, v] of Object.entries(e.pax ?? {})) records.push(paxRecord(k, Buffer.from(v)))
    if (records.length > 0) {
      const body = Buffer.concat(records)
      out.push(header('PaxHeaders/x', 'x', body.length, { name: 'PaxHeaders/x', mode: 0o644 }, ''), body, pad(body.length))
    }
    out.push(header(name, flag, data.length, e, link), data, pad(data.length))
  }
  if (eof) out.push(Buffer.alloc(1024))
  return Buffer.concat(out)
}

/** Deterministic bytes, about half of them incompressible: realistic gzip sizes. */
export function fixtureBytes (seed: number, n: number): Buffer {
  const b = Buffer.alloc(n)
  let state = createHash('sha256').update(`fixture-${seed}`).digest()
  for (let i = 0, block = 0; i < n; block++) {
    state = createHash('sha256').update(state).digest()
    const run = 64 + (state[0] << 1)
    if ((block & 1) === 0) {
      for (let j = 0; j < run && i < n; j += 32) {
        state = createHash('sha256').update(state).digest()
        const k = Math.min(32, run - j, n - i)
        state.copy(b, i, 0, k)
        i += k
      }
    } else {
      const k = Math.min(run, n - i)
      b.fill(state[1], i, i + k)
      i += k
    }
  }
  return b
}
