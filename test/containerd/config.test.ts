import { parse } from 'smol-toml'
import { describe, expect, it } from 'vitest'

interface Doc { proxy_plugins: Record<string, unknown>, plugins: Record<string, { containerd: unknown }> }
import { containerdConfigSnippet } from '../../src/containerd/config.js'

describe('containerdConfigSnippet', () => {
  it('registers the proxy snapshotter and the CRI settings in valid TOML', () => {
    const doc = parse(containerdConfigSnippet()) as unknown as Doc
    expect(doc.proxy_plugins['ipfs-estargz']).toEqual({ type: 'snapshot', address: '/run/ipfs-estargz/snapshotter.sock' })
    expect(doc.plugins['io.containerd.grpc.v1.cri'].containerd).toEqual({ snapshotter: 'ipfs-estargz', disable_snapshot_annotations: false })
  })

  it('takes another name and socket, and can leave CRI out', () => {
    const doc = parse(containerdConfigSnippet({ name: 'x', address: '/tmp/s.sock', cri: false })) as unknown as Doc
    expect(doc).toEqual({ proxy_plugins: { x: { type: 'snapshot', address: '/tmp/s.sock' } } })
  })
})
