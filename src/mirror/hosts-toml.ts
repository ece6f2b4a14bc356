/** What `containerd-config --mirror` prints. */
export interface HostsTomlOptions {
  /** The mirror's URL, `http://127.0.0.1:5380` (plain HTTP is what containerd needs spelled out). */
  mirror: string
  /**
   * The registry the mirror stands in front of (`docker.io`, `ghcr.io`, …): containerd asks the
   * mirror first and that registry when the mirror answers 404. Absent: the file for pulling the
   * mirror's own names (`HOST:PORT/ipfs/<cid>`, `HOST:PORT/NAME:TAG`).
   */
  upstream?: string
}

/** The registry host containerd's certs.d folder is named after, and its server URL. */
function upstreamServer (upstream: string): string {
  return upstream === 'docker.io' ? 'https://registry-1.docker.io' : `https://${upstream}`
}

/**
 * The `hosts.toml` that makes containerd pull through the mirror (containerd's registry host
 * configuration, `config_path` in its CRI settings or `ctr --hosts-dir`), with the path it goes
 * to under `/etc/containerd/certs.d` in a comment.
 */
export function hostsToml (options: HostsTomlOptions): string {
  const url = new URL(options.mirror)
  const mirror = `${url.protocol}//${url.host}`
  const folder = options.upstream ?? url.host
  const lines = [
    `# /etc/containerd/certs.d/${folder}/hosts.toml`,
    options.upstream != null
      ? `# containerd asks the ipfs-estargz mirror first; on a 404 it falls back to ${options.upstream}.`
      : '# pull HOST:PORT/ipfs/<cid> (or a name given with `ipfs-estargz tag`) from the ipfs-estargz mirror.',
    `server = ${JSON.stringify(options.upstream != null ? upstreamServer(options.upstream) : mirror)}`,
    '',
    `[host.${JSON.stringify(mirror)}]`,
    '  capabilities = ["pull", "resolve"]',
    ''
  ]
  return lines.join('\n')
}
