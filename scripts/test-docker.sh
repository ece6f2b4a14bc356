#!/usr/bin/env bash
# `npm run test:docker`: builds docker/Dockerfile with buildah from Debian's packages and npm
# only (the base image from debootstrap, kept between runs), then runs the image's command:
# `--version`, `--help` and a `layer build` whose blob `layer verify` checks. About 6 minutes
# on two cores once the base exists (debootstrap adds 2-3); not part of `npm test`.
# A CA bundle for a TLS-re-signing proxy is passed as the build secret npm-ca when
# NPM_CA_FILE (default: npm's own cafile setting) names one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v buildah >/dev/null && command -v debootstrap >/dev/null || apt-get install -y --no-install-recommends buildah debootstrap
B=(buildah --storage-driver vfs)
BASE=localhost/debian:trixie-slim
if ! "${B[@]}" inspect --type image "$BASE" >/dev/null 2>&1; then
  ctr=$("${B[@]}" from scratch)
  trap '"${B[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
  debootstrap --variant=minbase trixie "$("${B[@]}" mount "$ctr")" http://deb.debian.org/debian
  "${B[@]}" umount "$ctr"
  "${B[@]}" commit "$ctr" "$BASE"
fi
ca=${NPM_CA_FILE:-$(npm config get cafile 2>/dev/null || true)}
secret=()
if [ -n "$ca" ] && [ "$ca" != null ] && [ -s "$ca" ]; then secret=(--secret "id=npm-ca,src=$ca"); fi
"${B[@]}" bud --layers --isolation chroot "${secret[@]}" --build-arg "BASE=$BASE" -f docker/Dockerfile -t localhost/ipfs-estargz .
ctr=$("${B[@]}" from localhost/ipfs-estargz)
trap '"${B[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
run () { "${B[@]}" run --isolation chroot "$ctr" -- "$@"; }
want=$(node -p 'require("./package.json").version')
got=$(run ipfs-estargz --version)
[ "$got" = "$want" ] || { echo "the image's ipfs-estargz --version printed '$got', not $want" >&2; exit 1; }
run ipfs-estargz --help | grep -q 'containerd' || { echo 'the image'"'"'s --help lacks its command list' >&2; exit 1; }
run sh -c 'set -e; mkdir -p /tmp/t/d; echo hello > /tmp/t/d/a; tar -C /tmp/t -cf /tmp/l.tar d
  toc=$(ipfs-estargz layer build /tmp/l.tar /tmp/l.esgz | sed -n "s/.*\"tocDigest\":\"\([^\"]*\)\".*/\1/p")
  ipfs-estargz layer verify --toc-digest "$toc" /tmp/l.esgz >/dev/null'
echo "docker/Dockerfile: built localhost/ipfs-estargz ($("${B[@]}" images --format '{{.Size}}' localhost/ipfs-estargz)); --version, --help, layer build and verify ran in it"
