import { chmod, mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { collectBlock } from '../../src/ipfs/dag-reader.js'
import { SwarmKeyMalformedError, SwarmKeyPermissionsError, SwarmKeyUnreadableError } from '../../src/ipfs/errors.js'
import { importBytes } from '../../src/ipfs/import.js'
import { createNode } from '../../src/ipfs/node.js'
import { generateSwarmKey, parseSwarmKey, readSwarmKey } from '../../src/ipfs/swarm-key.js'
import { silentLogger } from '../../src/logging.js'
import { TempRepos, random } from './helpers.js'

const repos = new TempRepos()
afterAll(async () => { await repos.cleanup() })

const HEX = 'ab'.repeat(32)

describe('swarm key', () => {
  it('generates v1 keys that parse, each different', () => {
    const a = generateSwarmKey()
    expect(a).toMatch(/^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}\n$/)
    expect(a).not.toBe(generateSwarmKey())
    expect(Buffer.from(parseSwarmKey(a)).toString()).toBe(a.trimEnd())
  })

  it('accepts CRLF and upper-case hex; refuses anything else with ERR_SWARM_KEY_MALFORMED, never echoing the key', () => {
    expect(Buffer.from(parseSwarmKey(`/key/swarm/psk/1.0.0/\r\n/base16/\r\n${HEX.toUpperCase()}\r\n`)).toString()).toBe(`/key/swarm/psk/1.0.0/\n/base16/\n${HEX}`)
    const bad = [
      '',
      `/key/swarm/psk/1.0.0/\n/base16/\n${HEX.slice(2)}`, // 31 bytes
      `/key/swarm/psk/1.0.0/\n/base16/\n${HEX}00`, // 33 bytes
      `/key/swarm/psk/1.0.0/\n/base64/\n${HEX}`,
      `/key/swarm/psk/2.0.0/\n/base16/\n${HEX}`,
      `/key/swarm/psk/1.0.0/\n/base16/\n${'zz'.repeat(32)}`,
      `/key/swarm/psk/1.0.0/\n/base16/\n${HEX}\nextra`
    ]
    for (const text of bad) {
      let err: unknown
      try { parseSwarmKey(text) } catch (e) { err = e }
      expect(err, JSON.stringify(text)).toBeInstanceOf(SwarmKeyMalformedError)
      expect((err as SwarmKeyMalformedError).code).toBe('ERR_SWARM_KEY_MALFORMED')
      expect((err as Error).message).not.toContain(HEX)
    }
  })

  it('reads a private key file; refuses one others may access, a missing one, a directory, a huge one', async () => {
    const dir = await repos.scratch()
    const file = join(dir, 'swarm.key')
    await writeFile(file, generateSwarmKey(), { mode: 0o600 })
    expect((await readSwarmKey(file)).length).toBe(95)
    await chmod(file, 0o400)
    expect((await readSwarmKey(file)).length).toBe(95)
    for (const mode of [0o640, 0o604, 0o620, 0o644]) {
      await chmod(file, mode)
      await expect(readSwarmKey(file)).rejects.toMatchObject({ code: 'ERR_SWARM_KEY_PERMISSIONS' })
    }
    await expect(readSwarmKey(file)).rejects.toBeInstanceOf(SwarmKeyPermissionsError)
    await expect(readSwarmKey(join(dir, 'nope'))).rejects.toBeInstanceOf(SwarmKeyUnreadableError)
    await mkdir(join(dir, 'd'), { mode: 0o700 })
    await expect(readSwarmKey(join(dir, 'd'))).rejects.toBeInstanceOf(SwarmKeyUnreadableError)
    const big = join(dir, 'big.key')
    await writeFile(big, 'x'.repeat(10_000), { mode: 0o600 })
    await expect(readSwarmKey(big)).rejects.toBeInstanceOf(SwarmKeyMalformedError)
  })

  it('nodes with the same generated key fetch from each other; with another key or none they cannot connect, and a read fails (no hang)', async () => {
    const key = parseSwarmKey(generateSwarmKey())
    const other = parseSwarmKey(generateSwarmKey())
    const mk = async (psk?: Uint8Array, listen = false): Promise<Awaited<ReturnType<typeof createNode>>> =>
      await createNode({ repo: await repos.dir(), listen: listen ? ['/ip4/127.0.0.1/tcp/0'] : [], inboundConnectionsPerSec: 1000, ...(psk != null ? { psk } : {}), logger: silentLogger() })
    const a = await mk(key, true)
    const b = await mk(key)
    const wrong = await mk(other)
    const none = await mk()
    try {
      const data = random(200_000)
      const { cid } = await importBytes(a.helia.blockstore, data)
      await b.dial(a.multiaddrs()[0])
      const got = await collectBlock(b.blocks.get(cid, { signal: AbortSignal.timeout(10_000) }))
      expect(got.length).toBeGreaterThan(0)
      for (const n of [wrong, none]) {
        await expect(n.dial(a.multiaddrs()[0])).rejects.toThrow()
        expect(n.helia.libp2p.getConnections().length).toBe(0)
        const t0 = Date.now()
        await expect(collectBlock(n.blocks.get(cid, { signal: AbortSignal.timeout(2_000) }))).rejects.toThrow()
        expect(Date.now() - t0).toBeLessThan(5_000)
        expect(await n.localBlockstore.has(cid)).toBe(false)
      }
      expect(a.helia.libp2p.getConnections().map(c => c.remotePeer.toString())).toEqual([b.peerId.toString()])
    } finally {
      for (const n of [a, b, wrong, none]) await n.stop()
    }
  })
})
