import { parse, stringify } from 'smol-toml'
import { ContainerdConfigError } from './errors.js'

/**
 * The containerd configuration that registers ipfs-estargz as a proxy snapshotter, for
 * `ipfs-estargz containerd-config` and docs/containerd.md. Three forms:
 * - a snippet for a config that has none of these tables yet (`containerdConfigSnippet`);
 * - an existing config with our settings merged in (`mergeContainerdConfig`): appending the
 *   snippet to `containerd config default` output redefines its CRI table, which TOML forbids;
 * - a drop-in for containerd's `imports` (`containerdDropIn`): only `proxy_plugins`, because
 *   containerd 1.x replaces a whole plugin section with the imported one (`mergeConfig` in
 *   services/server/config), so a CRI table there would wipe the main config's CRI settings.
 */
export const DEFAULTS = {
  /** snapshotter name in containerd's config (`proxy_plugins.<name>`, `--snapshotter <name>`) */
  name: 'ipfs-estargz',
  /** the daemon's snapshotter socket */
  address: '/run/ipfs-estargz/snapshotter.sock',
  /** also print the CRI plugin settings (Kubernetes) */
  cri: true,
  /** containerd major version: 1 (1.6/1.7, config `version = 2`) or 2 (config `version = 3`) */
  containerdVersion: 1 as ContainerdMajor
}

export type ContainerdMajor = 1 | 2

export interface ContainerdConfigOptions extends Partial<typeof DEFAULTS> {}

/** The config file version each containerd major version reads. */
const CONFIG_VERSION: Record<ContainerdMajor, number> = { 1: 2, 2: 3 }

type Table = Record<string, unknown>

/** Our settings as a TOML document (nested tables), for the version asked for. */
function settings (o: typeof DEFAULTS): Table {
  const proxy: Table = { type: 'snapshot', address: o.address }
  // containerd 2.1's transfer service passes the layer labels only to a proxy snapshotter that asks
  if (o.containerdVersion === 2) proxy.exports = { enable_remote_snapshot_annotations: 'true' }
  const doc: Table = { proxy_plugins: { [o.name]: proxy } }
  if (!o.cri) return doc
  // the CRI plugin unpacks through us and passes the layer labels we need (CRI's default drops them)
  const cri = { snapshotter: o.name, disable_snapshot_annotations: false }
  doc.plugins = o.containerdVersion === 2
    ? { 'io.containerd.cri.v1.images': cri }
    : { 'io.containerd.grpc.v1.cri': { containerd: cri } }
  return doc
}

function resolve (options: ContainerdConfigOptions): typeof DEFAULTS {
  const o = { ...DEFAULTS, ...options }
  if (o.containerdVersion !== 1 && o.containerdVersion !== 2) {
    throw new ContainerdConfigError(`containerd version must be 1 (1.6/1.7) or 2, not ${String(o.containerdVersion)}`)
  }
  return o
}

/**
 * TOML for a config that does not define these tables yet (a new file, or one written by hand
 * without CRI settings). For `containerd config default` output use mergeContainerdConfig.
 */
export function containerdConfigSnippet (options: ContainerdConfigOptions = {}): string {
  const o = resolve(options)
  const lines = [
    `[proxy_plugins.${JSON.stringify(o.name)}]`,
    '  type = "snapshot"',
    `  address = ${JSON.stringify(o.address)}`
  ]
  if (o.containerdVersion === 2) {
    lines.push(`  [proxy_plugins.${JSON.stringify(o.name)}.exports]`, '    enable_remote_snapshot_annotations = "true"')
  }
  if (o.cri) {
    lines.push(
      '',
      '# Kubernetes (CRI): unpack through ipfs-estargz and pass the layer labels it needs',
      o.containerdVersion === 2 ? '[plugins."io.containerd.cri.v1.images"]' : '[plugins."io.containerd.grpc.v1.cri".containerd]',
      `  snapshotter = ${JSON.stringify(o.name)}`,
      '  disable_snapshot_annotations = false'
    )
  }
  return lines.join('\n') + '\n'
}

/**
 * A file for containerd's `imports` (e.g. /etc/containerd/conf.d/ipfs-estargz.toml): the proxy
 * snapshotter only. containerd replaces a whole plugin section from an import, so the CRI
 * settings cannot go here; they belong in the main config (mergeContainerdConfig).
 */
export function containerdDropIn (options: ContainerdConfigOptions = {}): string {
  const o = resolve({ ...options, cri: false })
  return [
    '# ipfs-estargz proxy snapshotter: a drop-in for containerd\'s `imports`',
    `version = ${CONFIG_VERSION[o.containerdVersion]}`,
    '',
    containerdConfigSnippet(o)
  ].join('\n')
}

function isTable (v: unknown): v is Table {
  return v != null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Date)
}

/** Sets every leaf of `from` in `to`, creating tables on the way; a non-table in the way is an error. */
function mergeInto (to: Table, from: Table, path: string[]): void {
  for (const [k, v] of Object.entries(from)) {
    const here = [...path, k]
    if (isTable(v)) {
      const cur = to[k]
      if (cur == null) to[k] = {}
      else if (!isTable(cur)) throw new ContainerdConfigError(`the config sets ${here.join('.')} to a value where a table is expected`)
      mergeInto(to[k] as Table, v, here)
    } else {
      to[k] = v
    }
  }
}

/**
 * An existing containerd config (TOML text) with our settings merged in: the proxy plugin
 * added or replaced, the CRI snapshotter and annotations set, everything else kept. The result
 * is the whole file (comments are not kept: the TOML is re-written). A config without a
 * `version` is containerd's version 1 format, which has other plugin names: refused.
 */
export function mergeContainerdConfig (existing: string, options: ContainerdConfigOptions = {}): string {
  const o = resolve(options)
  let doc: Table
  try {
    doc = parse(existing) as Table
  } catch (err) {
    throw new ContainerdConfigError(`the containerd config is not valid TOML: ${(err as Error).message.split('\n')[0]}`, { cause: err })
  }
  const want = CONFIG_VERSION[o.containerdVersion]
  const have = doc.version ?? (Object.keys(doc).length === 0 ? want : 1)
  if (have !== want) {
    throw new ContainerdConfigError(`the containerd config has version = ${String(have)}; containerd ${o.containerdVersion === 2 ? '2.x reads version 3' : '1.6/1.7 read version 2'}` +
      ` (use --containerd-version ${have === 3 ? 2 : 1}${have === 1 ? ', after `containerd config migrate`' : ''})`)
  }
  doc.version = want
  mergeInto(doc, settings(o), [])
  return stringify(doc) + '\n'
}
