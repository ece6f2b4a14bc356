#!/usr/bin/env bash
# Stands up the reference lazy-pulling stack (containerd, the reference stargz snapshotter, a
# loopback registry and its 3-layer python image) that the start-up benchmark and
# `npm run test:reference` compare against. Idempotent: what runs already is reused.
#   work folder: $IPFS_ESTARGZ_REFSTACK (default: ../refstack beside the clone)
#   reference sources: $IPFS_ESTARGZ_REFERENCE_DIR (default: ../shared beside the clone)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ref="${IPFS_ESTARGZ_REFERENCE_DIR:-$(cd .. && pwd)/shared}"
work="${IPFS_ESTARGZ_REFSTACK:-$(cd .. && pwd)/refstack}"
if [ ! -f "$ref/ref-stack/setup.sh" ]; then
  echo "refstack: no reference stack sources at $ref/ref-stack (set IPFS_ESTARGZ_REFERENCE_DIR)" >&2
  exit 1
fi
bash "$ref/ref-stack/setup.sh" "$work" >&2
