#!/usr/bin/env bash
# `npm run bench:rss` (as root): builds the CLI and the Debian fixture image if needed, then runs
# scripts/bench/rss.ts (peak RSS of the daemon and its FUSE manager serving the whole image).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash scripts/setup.sh test
exec npx tsx scripts/bench/rss.ts "$@"
