import { describe, expect, it } from 'vitest'
import { SERVICES, loadServices, type ServiceName } from '../../src/wire/index.js'

describe('loadServices', () => {
  it('loads every service in one pass, once: the snapshotter server\'s call leaves the containerd client\'s definitions ready', () => {
    const first = loadServices(['snapshots'])
    const all = loadServices(Object.keys(SERVICES) as ServiceName[])
    expect(all.snapshots).toBe(first.snapshots)
    expect(Object.keys(all.content)).toEqual(expect.arrayContaining(['Info', 'Write', 'Abort']))
    expect(Object.keys(all.snapshots)).toEqual(expect.arrayContaining(['Prepare', 'Commit', 'Mounts']))
    expect(loadServices(['leases']).leases).toBe(all.leases)
  })
})
