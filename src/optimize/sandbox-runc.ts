import type { WorkloadUser } from './workload.js'

/**
 * The sandbox on runc, the OCI runtime containerd runs containers with: the workload runs as a
 * container would (its own pid, mount, ipc, uts and cgroup namespaces; containerd's default
 * capabilities; masked and read-only /proc and /sys paths; no new privileges), in a network
 * namespace with nothing in it but loopback. The bundle's rootfs is the overlay of our FUSE layer
 * mounts over a tmpfs, mounted in a private mount namespace (SETUP_RUNC), so it goes away with
 * the sandbox as in the namespaces runner.
 */

/**
 * Shell lines, run in the sandbox's private mount namespace with `$root`, `$scratch`, `$lower`
 * and `$size` set: a tmpfs for the workload's writes and the overlay of the layers over it at
 * `$root`. An image whose `dirs` (where mounts will go) are not directories (a symlink out of
 * it) gets a directory there, in the overlay's upper layer, so no mount ever follows one out.
 * Everything it mounts goes away with the namespace's last process.
 */
export function overlayRootLines (dirs: readonly string[]): string {
  return `mount -t tmpfs -o "mode=0700,nosuid,nodev,size=$size" ipfs-estargz-scratch "$scratch"
mkdir "$scratch/upper" "$scratch/work"
mount -t overlay -o "nosuid,nodev,lowerdir=$lower,upperdir=$scratch/upper,workdir=$scratch/work" ipfs-estargz-optimize "$root"
for d in ${dirs.join(' ')}; do
  if [ -L "$root/$d" ] || { [ -e "$root/$d" ] && [ ! -d "$root/$d" ]; }; then rm -f "$root/$d"; fi
  [ -d "$root/$d" ] || mkdir "$root/$d"
done
if command -v ip >/dev/null; then ip link set lo up; fi
`
}

/** The overlay rootfs (runc mounts /dev, /proc and /sys itself, only on ordinary directories), then runc. */
export const SETUP_RUNC = `set -eu
root=$1 scratch=$2 lower=$3 size=$4
shift 4
${overlayRootLines(['dev', 'proc', 'sys'])}exec "$@"
`

/** containerd's default capabilities for a container (its OCI spec defaults). */
const CAPABILITIES = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID',
  'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE'
]

/** Paths of /proc and /sys containerd masks or makes read-only in a container. */
const MASKED = ['/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list',
  '/proc/timer_stats', '/proc/sched_debug', '/sys/firmware', '/sys/devices/virtual/powercap', '/proc/scsi']
const READONLY = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger']

export interface RuncSpecInput {
  /** The rootfs (the overlay), an absolute path. */
  root: string
  args: string[]
  env: string[]
  cwd: string
  user: WorkloadUser
  /** Size of /dev/shm. */
  shmBytes: number
  /** Most processes the workload may have at once. */
  maxPids: number
}

/** The bundle's config.json (OCI runtime spec 1.0). */
export function runcSpec (i: RuncSpecInput): unknown {
  const caps = i.user.uid === 0 ? CAPABILITIES : []
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: i.user.uid, gid: i.user.gid },
      args: i.args,
      env: i.env,
      cwd: i.cwd,
      capabilities: { bounding: CAPABILITIES, effective: caps, permitted: caps },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true
    },
    root: { path: i.root, readonly: false },
    hostname: 'ipfs-estargz-optimize',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', `size=${i.shmBytes}`] },
      { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] }
    ],
    linux: {
      // no 'network': the container joins the sandbox's own network namespace, made by unshare
      // with a loopback interface up (as containerd's CNI loopback gives a container)
      namespaces: ['pid', 'ipc', 'uts', 'mount', 'cgroup'].map(type => ({ type })),
      resources: { pids: { limit: i.maxPids } },
      maskedPaths: MASKED,
      readonlyPaths: READONLY
    }
  }
}
