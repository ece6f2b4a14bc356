import { generateKey } from '@libp2p/pnet'
import { afterAll, describe, expect, it } from 'vitest'
import { collectBlock } from '../../src/ipfs/dag-reader.js'
import { importBytes } from '../../src/ipfs/import.js'
import { createNode } from '../../src/ipfs/node.js'
import { silentLogger } from '../../src/logging.js'
import { TempRepos, random } from './helpers.js'

const repos = new TempRepos()
afterAll(async () => { await repos.cleanup() })

describe('createNode', () => {
  it('keeps its peer id and blocks across a restart', async () => {
    const repo = await repos.dir()
    const data = random(100_000)
    const first = await createNode({ repo, logger: silentLogger() })
    const peerId = first.peerId.toString()
    const { cid } = await importBytes(first.helia.blockstore, data)
    await first.stop()
    await first.stop() // idempotent

    const second = await repos.node({ repo })
    expect(second.peerId.toString()).toBe(peerId)
    const back = await collectBlock(second.helia.blockstore.get(cid, { offline: true }))
    expect(Buffer.compare(Buffer.from(back), data)).toBe(0)
  })

  it('does not listen unless asked', async () => {
    const node = await repos.node()
    expect(node.multiaddrs()).toEqual([])
    const listening = await repos.node({ listen: ['/ip4/127.0.0.1/tcp/0'] })
    expect(listening.multiaddrs().length).toBe(1)
    expect(listening.multiaddrs()[0].toString()).toMatch(/^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\//)
  })

  it('refuses a second node on the same repo with RepoLockedError', async () => {
    const repo = await repos.dir()
    const node = await repos.node({ repo })
    await expect(createNode({ repo, logger: silentLogger() })).rejects.toMatchObject({ code: 'ERR_REPO_LOCKED' })
    await node.stop()
    const again = await repos.node({ repo })
    expect(again.peerId.equals(node.peerId)).toBe(true)
  })

  it('dials static peers given at start', async () => {
    const a = await repos.node({ listen: ['/ip4/127.0.0.1/tcp/0'] })
    const b = await createNode({ repo: await repos.dir(), peers: [a.multiaddrs()[0].toString()], logger: silentLogger() })
    try {
      expect(b.helia.libp2p.getConnections(a.peerId).length).toBeGreaterThan(0)
    } finally {
      await b.stop()
    }
  })

  it('joins a private swarm with the right key and is refused with another', async () => {
    const key = new Uint8Array(95)
    generateKey(key)
    const other = new Uint8Array(95)
    generateKey(other)
    const a = await createNode({ repo: await repos.dir(), listen: ['/ip4/127.0.0.1/tcp/0'], psk: key, logger: silentLogger() })
    const b = await createNode({ repo: await repos.dir(), psk: key, logger: silentLogger() })
    const c = await createNode({ repo: await repos.dir(), psk: other, logger: silentLogger() })
    try {
      const data = random(300_000)
      const { cid } = await importBytes(a.helia.blockstore, data)
      await b.dial(a.multiaddrs()[0])
      const got = await collectBlock(b.helia.blockstore.get(cid, { signal: AbortSignal.timeout(10_000) }))
      expect(Buffer.compare(Buffer.from(got), data)).toBe(0)
      await expect(c.dial(a.multiaddrs()[0])).rejects.toThrow()
    } finally {
      await a.stop()
      await b.stop()
      await c.stop()
    }
  })
})
