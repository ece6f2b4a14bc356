/**
 * The containerd configuration that registers ipfs-estargz as a proxy snapshotter, for
 * `ipfs-estargz containerd-config` and docs/containerd.md.
 */
export const DEFAULTS = {
  /** snapshotter name in containerd's config (`proxy_plugins.<name>`, `--snapshotter <name>`) */
  name: 'ipfs-estargz',
  /** the daemon's snapshotter socket */
  address: '/run/ipfs-estargz/snapshotter.sock',
  /** also print the CRI plugin settings (Kubernetes) */
  cri: true
}

export interface ContainerdConfigOptions extends Partial<typeof DEFAULTS> {}

/** TOML to merge into /etc/containerd/config.toml (config version 2, containerd 1.6/1.7). */
export function containerdConfigSnippet (options: ContainerdConfigOptions = {}): string {
  const o = { ...DEFAULTS, ...options }
  const lines = [
    `[proxy_plugins.${JSON.stringify(o.name)}]`,
    '  type = "snapshot"',
    `  address = ${JSON.stringify(o.address)}`
  ]
  if (o.cri) {
    lines.push(
      '',
      '# Kubernetes (CRI): unpack through ipfs-estargz and pass the layer labels it needs',
      '[plugins."io.containerd.grpc.v1.cri".containerd]',
      `  snapshotter = ${JSON.stringify(o.name)}`,
      '  disable_snapshot_annotations = false'
    )
  }
  return lines.join('\n') + '\n'
}
