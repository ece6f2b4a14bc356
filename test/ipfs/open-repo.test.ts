import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { importBytes } from '../../src/ipfs/import.js'
import { openRepo } from '../../src/ipfs/open-repo.js'
import { silentLogger } from '../../src/logging.js'
import { TempRepos, random } from './helpers.js'

const repos = new TempRepos()
const DIGEST = `sha256:${'a'.repeat(64)}`
afterAll(async () => { await repos.cleanup() })

describe('openRepo', () => {
  it('opens the node and the index of a repo, and keeps both across a reopen', async () => {
    const path = await repos.dir()
    const first = await openRepo({ logger: silentLogger() }, { repo: path })
    expect(first.path).toBe(path)
    const { cid } = await importBytes(first.node.helia.blockstore, random(10_000))
    first.index.digests.put(DIGEST, cid)
    const peerId = first.node.peerId.toString()
    await first.close()

    const second = await openRepo({ logger: silentLogger() }, { repo: path })
    try {
      expect(second.node.peerId.toString()).toBe(peerId)
      expect(second.index.digests.get(DIGEST)?.toString()).toBe(cid.toString())
      expect(await second.node.helia.blockstore.has(cid)).toBe(true)
    } finally {
      await second.close()
    }
  })

  it('stops the node again when the index cannot be opened, so the repo is not left locked', async () => {
    const path = await repos.dir()
    await mkdir(join(path, 'index.sqlite'), { recursive: true }) // a folder where the index database must be
    await expect(openRepo({ logger: silentLogger() }, { repo: path })).rejects.toMatchObject({ code: 'EISDIR' })
    const node = await repos.node({ repo: path }) // the repo lock was released
    await node.stop()
  })
})
