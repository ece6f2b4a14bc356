#!/usr/bin/env bash
# `npm run bench:convert`: builds the CLI and the Debian fixture image if needed, then runs the
# conversion benchmark (ipfs-estargz layer build vs the reference esgz-ref). Arguments are passed
# to scripts/bench/convert.ts (--runs N, --input TAR, --chunk-size N, --level N, --concurrency N, --cpu-prof).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
npx tsc -p tsconfig.build.json
bash scripts/fixtures/debootstrap-image.sh "${IPFS_ESTARGZ_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ipfs-estargz-test}/images" >/dev/null
exec npx tsx scripts/bench/convert.ts "$@"
