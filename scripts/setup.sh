#!/usr/bin/env bash
# Installs whatever is missing for the demo or the tests, then builds. Safe to run again: each
# step is skipped when its result is already there.
#
#   scripts/setup.sh [demo|test]     (default: test)
#
# Debian packages come from apt (root needed; CI runs as root). npm packages come from
# package-lock.json via `npm ci`, redone when the lock file or the Node version changes
# (better-sqlite3 is compiled for one Node ABI).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
profile="${1:-test}"

# fuse-native links libfuse.so.2 (libfuse2) and unmounts with fusermount (fuse3).
apt_demo=(libfuse2 fuse3 jq)
# The tests also build the reference eStargz tool and containerd's snapshotter suite (Go,
# Debian's packaged libraries), run containerd/runc, serve a local registry, and make a Debian
# rootfs with debootstrap for the end-to-end image.
apt_test=("${apt_demo[@]}" golang-go golang-github-containerd-stargz-snapshotter-dev golang-github-containerd-containerd-dev
  containerd runc debootstrap docker-registry attr iproute2 psmisc)
case "$profile" in
  demo) want=("${apt_demo[@]}") ;;
  test) want=("${apt_test[@]}") ;;
  *) echo "usage: $0 [demo|test]" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: these packages are missing and installing them needs root: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}" >&2; then
    apt-get -o DPkg::Lock::Timeout=600 update >&2
    apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}" >&2
  fi
fi

stamp=node_modules/.ipfs-estargz-setup
want_stamp="$(sha256sum package-lock.json | cut -d' ' -f1) $(node -p 'process.versions.modules')"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want_stamp" ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund >&2
  # npm runs package.json's `dependencies` script after it changes node_modules; said here too,
  # as the patch must be in place (and, bundled, in the packed tarball) whatever npm decides
  node scripts/patch-xsalsa20.cjs >&2
  node scripts/patch-yamux.cjs >&2
  echo "$want_stamp" > "$stamp"
fi

# Built already, and no source newer than the build: nothing to do (the demo's test runs this
# while other tests run the built CLI, which a rebuild would rewrite under them).
if [ -f dist/cli/main.js ] && [ -z "$(find src tsconfig.json tsconfig.build.json package.json -newer dist/cli/main.js -print -quit)" ]; then
  echo "setup: dist/ is up to date" >&2
  exit 0
fi
echo "setup: building (tsc)" >&2
npx tsc -p tsconfig.build.json
